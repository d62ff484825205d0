"""A run's history: train.log (every progress line of every start, appended) and env.json (a record per start).

Both only grow: a resume appends to them and never rewrites what an earlier start recorded, so a
run resumed on another machine, thread count or Paddle still says where each epoch ran.

env.json is {"sessions": [first start, resume 1, ...]}, each record the environment
(runtime.environment_record) plus when it started, from which epoch, and the absolute data root
it read, which lets evaluate, predict and export find the data without the $PADDLE_CNN_DATA
that train was given (data.with_recorded_root). Versions before the history wrote one record as
the whole file: it is read as the first session and extended.

train.log is the one file of a run that is appended to rather than replaced atomically
(fileio.py): rewriting the whole log on every line would cost more than the line, and a kill
tears at most the line being written.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from pathlib import Path
from typing import Callable, Iterator

from . import fileio, rundir
from .runtime import rank


def now() -> str:
    """The local time with its UTC offset, to the second (ISO 8601), for records and log headers.

    Returns:
        E.g. "2025-06-01T14:03:12+02:00".
    """
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def read_sessions(run_dir: Path) -> list[dict]:
    """The start and resume records of a run's env.json, oldest first (an old single record is one session).

    Args:
        run_dir: the run directory.
    Returns:
        The records; [] when there is no env.json. Raises ValueError when it is not readable JSON of
        either form (OSError when it cannot be read at all).
    """
    path = Path(run_dir) / rundir.ENV
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("sessions"), list):
        return data["sessions"]
    if isinstance(data, dict):
        return [data]  # written before the history existed: that start's record
    raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object")


def record_session(run_dir: Path, environment: dict, resumed: bool, start_epoch: int, data_root: Path) -> dict:
    """Append this start's record to env.json (rank 0 writes).

    Args:
        run_dir: the run directory.
        environment: runtime.environment_record(device).
        resumed: this start continues the run.
        start_epoch: epochs completed before this start.
        data_root: the data root this start reads (recorded absolute).
    Returns:
        The record appended.
    """
    try:
        sessions = read_sessions(run_dir)
    except (OSError, ValueError, UnicodeDecodeError):
        # A damaged history must not stop a resume; its bytes are kept, not dropped.
        raw = (Path(run_dir) / rundir.ENV).read_bytes().decode("utf-8", "replace")
        sessions = [{"unreadable_env_json": raw}]
    record = {"started": now(), "resumed": resumed, "start_epoch": start_epoch,
              "data_root": str(Path(data_root).expanduser().resolve()), **environment}
    fileio.write_json(Path(run_dir) / rundir.ENV, {"sessions": [*sessions, record]})
    return record


def recorded_data_root(run_dir: Path) -> str | None:
    """The data root the run's latest start read, as env.json records it.

    Args:
        run_dir: the run directory.
    Returns:
        An absolute path, or None (no env.json, an unreadable one, or one from before the record).
    """
    try:
        sessions = read_sessions(run_dir)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    roots = [s.get("data_root") for s in sessions if isinstance(s, dict) and s.get("data_root")]
    return roots[-1] if roots else None


class TrainLog:
    """The `log` of a training run: prints each line and appends it to RUN_DIR/train.log.

    Lines logged before start() are held back and written with it: a run that fails before writing
    anything leaves its directory empty (rundir.settle), so train.log appears with the other files.
    """

    def __init__(self, run_dir: Path, echo: Callable[[str], None] = print):
        """Log into run_dir/train.log, printing through echo (the caller's own log)."""
        self.path, self.echo = Path(run_dir) / rundir.TRAIN_LOG, echo
        self.pending: list[str] | None = []

    def __call__(self, line: str) -> None:
        """Print a line and record it."""
        self.echo(line)
        if self.pending is None:
            self._append([line])
        else:
            self.pending.append(line)

    def start(self, record: dict, epochs: int) -> None:
        """Write this start's header line and the lines held back so far.

        Args:
            record: this start's env.json record (record_session).
            epochs: the configured train.epochs.
        """
        what = f"resume after epoch {record['start_epoch']}" if record["resumed"] else "start"
        header = f"== {record['started']} {what}, train.epochs {epochs}: {' '.join(record.get('command') or [])}"
        held, self.pending = self.pending or [], None
        self._append([header, *held])

    def note(self, text: str) -> None:
        """Record a line in train.log only (the command prints its own summary); nothing before start().

        Args:
            text: the line, without the time (added).
        """
        if self.pending is None:
            self._append([f"== {now()} {text}"])

    @contextlib.contextmanager
    def noting_the_end(self) -> Iterator[None]:
        """Within the block, an interruption or error that ends the run is noted in train.log."""
        try:
            yield
        except KeyboardInterrupt:
            self.note("interrupted; the last complete epoch is kept for --resume")
            raise
        except Exception as exc:
            self.note(f"stopped: {type(exc).__name__}: {exc}")
            raise

    def _append(self, lines: list[str]) -> None:
        if rank() != 0:  # data-parallel: rank 0 is the only writer
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(f"{line}\n" for line in lines))
