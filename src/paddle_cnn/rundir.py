"""One writer per run directory: an advisory lock held by the process that trains into it.

The lock is `fcntl.flock` on RUN_DIR/.lock, which holds the owner's pid for the message a second
process gets. The kernel drops a flock when its process dies, however it dies (kill -9 included),
so a lock file left behind by a killed run never blocks a resume: only a live holder does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

from .errors import RunDirError
from .runtime import rank

LOCK_NAME = ".lock"


def _holder_pid(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _try_lock(path: Path):
    """Open and flock path without waiting; the open file, or None if a live process holds it."""
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            f.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return None
            raise
        # The previous holder unlinks the file on release: if ours was unlinked meanwhile, the lock
        # is on a dead inode and another process may hold the new file's; take the new one.
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        except FileNotFoundError:
            pass
        f.close()


def _refuse(run_dir: Path) -> None:
    raise RunDirError(f"{run_dir} is being written by another paddle-cnn process (pid "
                      f"{_holder_pid(run_dir / LOCK_NAME)}); two runs in one directory would corrupt each other. "
                      f"Wait for it to end or stop it, or choose another --output-dir.")


def ensure_unlocked(run_dir: Path) -> None:
    """Refuse a run directory that a live process is writing (before moving or reusing it).

    Args:
        run_dir: the run directory (need not exist).
    """
    if not (run_dir / LOCK_NAME).is_file():
        return
    f = _try_lock(run_dir / LOCK_NAME)
    if f is None:
        _refuse(run_dir)
    f.close()


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold run_dir's lock for the block; refuse at once if a live process holds it.

    Args:
        run_dir: an existing run directory.
    """
    if rank() != 0:  # data-parallel: rank 0 is the only writer, and the one that locks
        yield
        return
    path = Path(run_dir) / LOCK_NAME
    f = _try_lock(path)
    if f is None:
        _refuse(Path(run_dir))
    try:
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before unlocking: see _try_lock
        f.close()
