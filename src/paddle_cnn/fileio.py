"""Crash-safe file writes: every file a run writes goes to a temporary name and is renamed into place.

A kill -9 at any moment therefore leaves either the previous complete file or the new complete
one, never a torn one.

Under paddle.distributed.launch only rank 0 writes: on the other ranks atomic_write and
remove_temp_files do nothing, so every process can run the same training code while the run
directory gets exactly one writer (see distributed.py).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from .errors import RunDirError
from .runtime import rank

TEMP_MARK = ".tmp-"


def _blocking_file(path: Path) -> Path | None:
    """The nearest existing path at or above `path` if it is not a directory (so nothing can go below it)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_output_dir(path: str | Path, what: str, option: str, target: Path | None = None) -> Path:
    """Refuse, before any work starts, an output directory that cannot be created or written.

    Args:
        path: the directory a command will write into (it may not exist yet).
        what: what goes there, for the message ("run", "comparison", ...).
        option: the flag that chose it, for the message ("--output-dir").
        target: the file that goes into path, if the message should name it instead.
    Returns:
        The path. Raises RunDirError naming the obstacle.
    """
    path = Path(path)
    target = target or path
    blocker = _blocking_file(path)
    if blocker is not None:
        where = "exists and is a file" if blocker == target else f"is under {blocker}, which is a file"
        raise RunDirError(f"cannot write the {what} to {target}: it {where}, not a directory. "
                          f"Choose another {option}.")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write the {what} to {target}: {existing} is not writable. Choose another {option}.")
    return path


def check_output_file(path: str | Path, what: str, option: str) -> Path:
    """Refuse, before any work starts, an output file that could not be written.

    Args:
        path: the file a command will write.
        what: what it holds, for the message.
        option: the flag that chose it.
    Returns:
        The path. Raises RunDirError naming the obstacle.
    """
    path = Path(path)
    if path.is_dir():
        raise RunDirError(f"cannot write the {what} to {path}: it is a directory. Give a file name to {option}.")
    check_output_dir(path.parent, what, option, target=path)
    return path


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Write a file via `write(tmp_path)`, fsync it, and rename it over `path`.

    Args:
        path: final location.
        write: function that writes the complete content to the temporary path it is given.
    """
    if rank() != 0:  # data-parallel: rank 0 is the only writer
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted atomic_write left under folder (kill -9, power loss).

    Only call it when no other process writes to folder: a live writer's temporary file looks the same.

    Args:
        folder: a run directory.
    Returns:
        The files removed (none on ranks other than 0, whose writer may be busy).
    """
    if rank() != 0:
        return []
    stale = [p for p in Path(folder).rglob(f".*{TEMP_MARK}*") if p.is_file()]
    for p in stale:
        p.unlink()
    return stale


def temp_sibling(target: Path) -> Path:
    """The temporary sibling this process builds `target` in before renaming it into place.

    Args:
        target: the file or folder to be written.
    Returns:
        target's folder / .<name>.tmp-<pid>.
    """
    return target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}")


def remove_dead_temp_dirs(target: Path) -> None:
    """Delete the temporary folders of `target` whose writer has died (an export killed with -9).

    Args:
        target: the folder about to be written; a live process's own temporary folder is kept.
    """
    for old in target.parent.glob(f".{target.name}{TEMP_MARK}*"):
        pid = old.name.rsplit(TEMP_MARK, 1)[1]
        if pid.isdigit() and old.is_dir() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file.

    Args:
        path: destination.
        text: full content.
    """
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write pretty JSON.

    Args:
        path: destination.
        data: JSON-serialisable object.
    """
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Atomically (re)write a JSON-lines file with all rows.

    Args:
        path: destination.
        rows: one dict per line.
    """
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file; a missing file is empty.

    Args:
        path: file to read.
    Returns:
        The rows.
    """
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def paddle_save(obj: Any, path: str | Path) -> None:
    """Atomically paddle.save an object (state dicts, checkpoints).

    Args:
        obj: what to save.
        path: destination.
    """
    import paddle

    atomic_write(path, lambda tmp: paddle.save(obj, tmp))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # old kernel or a file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Put the complete folder `new` at `target`, replacing what is there in one atomic step.

    Readers of target see the old folder or the new one, never a mix or nothing: both are swapped
    by renameat2(RENAME_EXCHANGE), then the old one (now at `new`) is deleted. Without that system
    call the old folder is renamed aside first, leaving a window of microseconds with no target.

    Args:
        new: a finished folder on the same file system (e.g. a temporary sibling of target).
        target: where it goes; an existing folder there is replaced (the caller decides if it may be).
    """
    import shutil

    new, target = Path(new), Path(target)
    if not target.exists():
        new.rename(target)
    elif _exchange(new, target):
        shutil.rmtree(new)
    else:
        old = target.with_name(f".{target.name}.replaced-{os.getpid()}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old)
