"""`paddle-cnn runs [DIR]`: one table of every run and comparison under a folder, from their files alone.

Reads config.yaml, results.json, metrics.jsonl, env.json and the lock of each run; imports no
paddle, writes nothing and takes no lock, so it is fast and safe beside a live run. A file that
cannot be read makes its run "broken", with the reason, instead of a traceback.

A run is a folder holding any of a run's files; a comparison is a folder with comparison.json,
listed with the runs under it. Entries are sorted by start time (env.json's first record, else
the time config.yaml was written), then by path.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

import yaml

from . import rundir, runlog
from .errors import RunDirError

RUN_FILES = (rundir.CONFIG, rundir.RESULTS, rundir.METRICS, rundir.ENV, str(rundir.LAST))
NOT_RUNS = {"vdl", "checkpoints", "inference"}  # folders inside a run, never runs themselves
COLUMNS = ("name", "model", "dataset", "status", "epochs", "best dev", "test", "wall", "started", "note")


def _read_json(path: Path, problems: list[str]):
    """A JSON file's content; None when it is missing or unreadable (the reason goes to problems)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name} is not readable JSON ({type(exc).__name__})")
        return None


def _read_config(run_dir: Path, problems: list[str]) -> dict:
    path = run_dir / rundir.CONFIG
    if not path.is_file():
        problems.append(f"no {rundir.CONFIG}")
        return {}
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        problems.append(f"{rundir.CONFIG} is not readable YAML ({type(exc).__name__})")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{rundir.CONFIG} is not a mapping")
        return {}
    return data


def _read_metrics(run_dir: Path, problems: list[str]) -> list[dict]:
    """metrics.jsonl's rows up to the first damaged line (the damage goes to problems)."""
    try:
        lines = (run_dir / rundir.METRICS).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        problems.append(f"{rundir.METRICS} is not readable ({type(exc).__name__})")
        return []
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            problems.append(f"{rundir.METRICS} line {number} is damaged (truncated?)")
            break
        rows.append(row)
    return rows


def _section(cfg: dict, name: str) -> dict:
    value = cfg.get(name)
    return value if isinstance(value, dict) else {}


def _sessions(run_dir: Path, problems: list[str]) -> list[dict]:
    try:
        return [s for s in runlog.read_sessions(run_dir) if isinstance(s, dict)]
    except (OSError, ValueError) as exc:
        problems.append(f"{rundir.ENV} is not readable JSON ({type(exc).__name__})")
        return []


def _status(run_dir: Path, results, problems: list[str]) -> tuple[str, str | None]:
    """(status, reason) of a run from its results.json, checkpoints, lock and the problems found."""
    if rundir.is_locked(run_dir):
        return "running", None  # its files are replaced atomically: what it has written so far is whole
    if results is not None and not isinstance(results, dict):
        problems.append(f"{rundir.RESULTS} is not a JSON object")
        results = None
    recorded = (results or {}).get("status")
    if recorded == "finished" and not (run_dir / rundir.BEST).is_file():
        problems.append(f"{rundir.BEST} is missing")
    if recorded not in (None, "finished", "failed"):
        problems.append(f"{rundir.RESULTS} has an unknown status {recorded!r}")
    if problems:
        return "broken", "; ".join(problems)
    if recorded == "finished" and results.get("stopped_early"):  # engine keeps status finished, adds these
        reason = results.get("stop_reason")
        return "early-stopped", reason if isinstance(reason, str) else None
    if recorded in ("finished", "failed"):
        return recorded, results.get("reason") if recorded == "failed" else None
    if (run_dir / rundir.LAST).is_file():
        return "interrupted", None
    return "interrupted", "before its first epoch ended: nothing to resume"


def _started(run_dir: Path, sessions: list[dict]) -> str | None:
    """When the run first started: env.json's first record, else the time its oldest file was written."""
    if sessions and isinstance(sessions[0].get("started"), str):
        return sessions[0]["started"]
    times = [p.stat().st_mtime for p in (run_dir / rundir.CONFIG, run_dir / rundir.ENV, run_dir) if p.exists()]
    return datetime.datetime.fromtimestamp(min(times)).astimezone().isoformat(timespec="seconds") if times else None


def _wall_seconds(results: dict, rows: list[dict], sessions: list[dict]) -> float | None:
    """Wall time of the whole run: the last start's (results.json) plus the epochs of earlier starts.

    results.json's wall_seconds covers only the start that finished the run; earlier starts
    count with their epochs' times (their data loading and any partial epoch are not recorded).
    Without results, the epochs' times so far.
    """
    epoch_seconds = [r.get("epoch_seconds") or 0.0 for r in rows]
    wall = results.get("wall_seconds") if isinstance(results, dict) else None
    if not isinstance(wall, (int, float)):
        return float(sum(epoch_seconds)) if rows else None
    last = sessions[-1] if sessions else {}
    start_epoch = 0 if not last.get("resumed") else last.get("start_epoch")
    if not isinstance(start_epoch, int):  # resumed, recorded before start_epoch was: the epochs are a floor
        return max(float(wall), float(sum(epoch_seconds)))
    return float(wall) + float(sum(s for r, s in zip(rows, epoch_seconds) if r["epoch"] <= start_epoch))


def describe_run(run_dir: Path, root: Path) -> dict:
    """One run's line of the table, as plain data.

    Args:
        run_dir: the run directory.
        root: the folder being listed (names are relative to it).
    Returns:
        {"kind": "run", "name", "path", "model", "dataset", "status", "reason", "epochs_completed",
        "epochs", "best_dev_acc", "test_acc", "test_samples", "wall_seconds", "started", "starts"}.
    """
    problems: list[str] = []
    cfg = _read_config(run_dir, problems)
    results = _read_json(run_dir / rundir.RESULTS, problems)
    rows = _read_metrics(run_dir, problems)
    sessions = _sessions(run_dir, problems)
    status, reason = _status(run_dir, results, problems)
    results = results if isinstance(results, dict) else {}
    dev = [r["dev_acc"] for r in rows if isinstance(r.get("dev_acc"), (int, float))]
    return {
        "kind": "run", "name": _name(run_dir, root), "path": str(run_dir.resolve()),
        "model": results.get("model") or _section(cfg, "model").get("name"),
        "dataset": results.get("dataset") or _section(cfg, "data").get("name"),
        "status": status, "reason": reason,
        "epochs_completed": results.get("epochs_completed", rows[-1]["epoch"] if rows else 0),
        "epochs": _section(cfg, "train").get("epochs"),
        "best_dev_acc": results.get("best_dev_acc", max(dev) if dev else None),
        "test_acc": results.get("test_acc"), "test_samples": results.get("test_samples"),
        "wall_seconds": _wall_seconds(results, rows, sessions),
        "started": _started(run_dir, sessions), "starts": len(sessions),
    }


def _name(path: Path, root: Path) -> str:
    return "." if path == root else path.relative_to(root).as_posix()


def describe_comparison(folder: Path, root: Path, runs: list[dict]) -> dict:
    """A comparison's line, with its runs.

    Args:
        folder: the comparison directory (holds comparison.json).
        root: the folder being listed.
        runs: describe_run() of the runs under folder.
    Returns:
        {"kind": "comparison", "name", "path", "status", "reason", "variants", "seeds", "models", "datasets",
        "wall_seconds" (the runs' sum), "started", "runs"}.
    """
    problems: list[str] = []
    data = _read_json(folder / rundir.COMPARISON, problems)
    data = data if isinstance(data, dict) else {}
    variants = [v.get("label") for v in data.get("variants", []) if isinstance(v, dict)]
    statuses = {r["status"] for r in runs}
    if problems:
        status = "broken"
    elif "running" in statuses:
        status = "running"
    else:
        status = "finished" if runs and statuses <= {"finished", "early-stopped"} else "interrupted"
    done = sum(r["status"] in ("finished", "early-stopped") for r in runs)
    reason = "; ".join(problems) or f"{len(variants)} variants x {len(data.get('seeds') or [])} seeds; " \
                                    f"{done}/{len(runs)} runs finished"
    started = min((r["started"] for r in runs if r["started"]), default=None)
    walls = [r["wall_seconds"] for r in runs if r["wall_seconds"] is not None]
    return {"kind": "comparison", "name": _name(folder, root), "path": str(folder.resolve()), "status": status,
            "reason": reason, "variants": variants, "seeds": data.get("seeds"),
            "models": sorted({r["model"] for r in runs if r["model"]}),
            "datasets": sorted({r["dataset"] for r in runs if r["dataset"]}),
            "wall_seconds": sum(walls) if walls else None, "started": started, "runs": sorted(runs, key=_order)}


def _order(entry: dict) -> tuple:
    return entry["started"] or "", entry["name"]


def find(root: Path) -> tuple[list[Path], list[Path]]:
    """The run directories and comparison directories under root (root itself included).

    Args:
        root: the folder to search.
    Returns:
        (runs, comparisons). Hidden folders (runs moved aside by --overwrite, temporary exports) are skipped.
    """
    runs, comparisons = [], []
    for folder, subdirs, files in os.walk(root):
        here = Path(folder)
        if rundir.COMPARISON in files:
            comparisons.append(here)
        if any((here / name).exists() for name in RUN_FILES):
            runs.append(here)
            subdirs[:] = []  # nothing inside a run is another run
            continue
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in NOT_RUNS)
    return runs, comparisons


def collect(root: str | Path) -> list[dict]:
    """Every run and comparison under root, sorted by start time, then name.

    Args:
        root: the folder to list.
    Returns:
        Entries of describe_run and describe_comparison (a comparison's runs inside it, not again on top).
    """
    root = Path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise RunDirError(f"{root} {what}; `paddle-cnn runs DIR` lists the runs and comparisons under a folder "
                          f"(default outputs/, where train and compare write them).")
    run_dirs, comparison_dirs = find(root)
    runs = [describe_run(d, root) for d in run_dirs]
    entries, claimed = [], set()
    for folder in sorted(comparison_dirs, key=lambda p: len(p.parts), reverse=True):  # innermost first
        inside = [r for r in runs if r["path"] not in claimed and Path(r["path"]).is_relative_to(folder.resolve())]
        claimed.update(r["path"] for r in inside)
        entries.append(describe_comparison(folder, root, inside))
    entries += [r for r in runs if r["path"] not in claimed]
    return sorted(entries, key=_order)


def _pct(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    if seconds < 100:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 100 else f"{minutes // 60} h {minutes % 60:02d} min"


def _cells(entry: dict, indent: str = "") -> list[str]:
    """One table row of an entry."""
    started = (entry["started"] or "-")[:16].replace("T", " ")
    if entry["kind"] == "comparison":
        return [indent + entry["name"] + "/", ",".join(entry["models"]) or "-", ",".join(entry["datasets"]) or "-",
                entry["status"], "-", "-", "-", _duration(entry["wall_seconds"]), started,
                f"comparison: {entry['reason']}"]
    test = "-" if entry["test_acc"] is None else f"{_pct(entry['test_acc'])} ({entry['test_samples'] or 0:,})"
    epochs = f"{entry['epochs_completed']}/{entry['epochs'] if entry['epochs'] is not None else '?'}"
    return [indent + entry["name"], entry["model"] or "-", entry["dataset"] or "-", entry["status"], epochs,
            _pct(entry["best_dev_acc"]), test, _duration(entry["wall_seconds"]), started, entry["reason"] or ""]


def format_table(entries: list[dict]) -> str:
    """The entries as an aligned text table (a comparison's runs indented under it).

    Args:
        entries: from collect().
    Returns:
        The table, one line per run or comparison, with a header.
    """
    rows = [list(COLUMNS)]
    for entry in entries:
        rows.append(_cells(entry))
        rows += [_cells(run, "  ") for run in entry.get("runs", [])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in rows)


def run_runs(folder: str, as_json: bool) -> int:
    """`paddle-cnn runs`: print the table (or JSON) of the runs under folder.

    Args:
        folder: the folder to list.
        as_json: print {"dir", "sorted_by", "entries"} as JSON instead of the table.
    Returns:
        Exit code 0 (a missing folder raises RunDirError).
    """
    entries = collect(folder)
    if as_json:
        text = json.dumps({"dir": str(Path(folder).resolve()), "sorted_by": "started, then name",
                           "entries": entries}, indent=2) + "\n"
    else:
        text = format_table(entries) if entries else f"no runs or comparisons under {folder}\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0
