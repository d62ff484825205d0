"""The run directory: the names of its files, its status, preparing and settling it, its lock.

Every module that reads or writes a run goes through the names here, so the layout the README
documents (## Run directory) is defined in one place.

One writer per run directory: `locked` holds `fcntl.flock` on RUN_DIR/.lock, which holds the
owner's pid for the message a second process gets. The kernel drops a flock when its process
dies, however it dies (kill -9 included), so a lock file left behind by a killed run never blocks
a resume: only a live holder does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator

from .errors import RunDirError
from .fileio import check_output_dir
from .runtime import rank

CONFIG = "config.yaml"          # the resolved config, re-loadable (--resume reads it)
ENV = "env.json"                # one record per start and resume: versions, device, threads, command, data root
TRAIN_LOG = "train.log"         # every progress line of every start and resume, appended
MODEL_REPORT_TXT = "model_report.txt"
MODEL_REPORT_JSON = "model_report.json"
METRICS = "metrics.jsonl"       # one line per completed epoch
RESULTS = "results.json"        # status and test result; written when a run ends or fails
CURVES = "curves.png"
VDL = "vdl"                     # VisualDL logs, one subfolder per split
PREDICTIONS = "predictions.png"
LAST = Path("checkpoints") / "last.pdckpt"    # everything --resume needs
BEST = Path("checkpoints") / "best.pdparams"  # weights of the best dev accuracy
LOCK_NAME = ".lock"
COMPARISON = "comparison.json"  # marks a comparison directory (compare.write_summary)


def confusion_png(split: str) -> str:
    """File name of a split's confusion-matrix picture.

    Args:
        split: "test" or "dev".
    Returns:
        The file name (the test split's keeps the short name).
    """
    return "confusion_matrix.png" if split == "test" else f"confusion_matrix_{split}.png"


def read_results(run_dir: Path) -> dict | None:
    """A run's results.json (status "finished" or "failed").

    Args:
        run_dir: the run directory.
    Returns:
        The results, or None while there are none (or they cannot be read).
    """
    try:
        return json.loads((Path(run_dir) / RESULTS).read_text())
    except (OSError, ValueError):
        return None


def status(run_dir: Path) -> str:
    """What a run directory holds, for deciding what to do with it.

    Args:
        run_dir: the run directory.
    Returns:
        "finished", "failed", "resumable" (a checkpoint, no result yet) or "new".
    """
    recorded = (read_results(run_dir) or {}).get("status")
    if recorded in ("finished", "failed"):
        return recorded
    return "resumable" if (Path(run_dir) / LAST).is_file() else "new"


def prepare(run_dir: Path, overwrite: bool) -> Path | None:
    """Make sure a new run may be written to run_dir; never destroys a run unless asked to.

    With overwrite, the old run is moved aside, not deleted yet, so that a new run that fails before
    writing anything (missing data, a typo in the model name) can put it back (see settle).

    Args:
        run_dir: the intended run directory.
        overwrite: the user passed --overwrite.
    Returns:
        Where the replaced run was moved, or None.
    """
    check_output_dir(run_dir, "run", "--output-dir")
    ensure_unlocked(run_dir)  # a live run is never moved aside or reported as resumable
    replaced = None
    if run_dir.is_dir() and any(run_dir.iterdir()):
        recorded = (read_results(run_dir) or {}).get("status")
        if overwrite:
            replaced = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}")
            run_dir.rename(replaced)
        elif recorded == "failed":
            raise RunDirError(f"{run_dir} holds a run that failed (see its results.json). Continue it from its last "
                              f"good epoch with `paddle-cnn train --resume {run_dir}` (-o optimizer.lr=... may be "
                              f"given), or pass --overwrite to start again.")
        elif recorded:
            raise RunDirError(f"{run_dir} already holds a finished run. Pass --overwrite to replace it, train it "
                              f"further with `paddle-cnn train --resume {run_dir} -o train.epochs=N`, or choose "
                              f"another --output-dir (or -o output.name=...).")
        else:
            raise RunDirError(f"{run_dir} already holds an unfinished run. Continue it with "
                              f"`paddle-cnn train --resume {run_dir}`, or pass --overwrite to start again.")
    run_dir.mkdir(parents=True, exist_ok=True)
    return replaced


def settle(run_dir: Path, ours: bool, replaced: Path | None) -> bool:
    """After a failed or interrupted run: if the new run wrote nothing, undo making its directory.

    Args:
        run_dir: the run directory.
        ours: this command created run_dir (or replaced what was there).
        replaced: where a run replaced by --overwrite was moved, or None.
    Returns:
        True if run_dir was removed (and the replaced run put back).
    """
    if not ours or not run_dir.is_dir() or any(run_dir.iterdir()):
        return False
    run_dir.rmdir()
    if replaced is not None:
        replaced.rename(run_dir)
    return True


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


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds run_dir's lock, found without taking it (listing runs must not disturb them).

    Linux lists every flock in /proc/locks by device and inode; elsewhere the pid in the lock file is
    checked for a live process instead (which a recycled pid could fool).

    Args:
        run_dir: the run directory.
    Returns:
        True while a process trains into run_dir.
    """
    path = Path(run_dir) / LOCK_NAME
    try:
        st = os.stat(path)
    except OSError:
        return False
    pid = _holder_pid(path)
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return _pid_alive(pid)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    for fields in (line.split() for line in lines):
        # "1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF"; overlay file systems may
        # report another device for the same inode, so the holder's pid also identifies it.
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(st.st_ino) and (
                fields[5].rsplit(":", 1)[0] == device or fields[4] == pid):
            return True
    return False


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


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
