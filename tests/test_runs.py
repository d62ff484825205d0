"""`paddle-cnn runs`: every run and comparison under a folder in one table, broken ones included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from paddle_cnn import rundir
from paddle_cnn.cli import main
from paddle_cnn.runs import collect

from conftest import tiny_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root) -> Path:
    """A real finished one-epoch run."""
    tmp = tmp_path_factory.mktemp("runs_source")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data_root, train={"epochs": 1})))
    assert main(["train", str(config), "--output-dir", str(tmp / "run")]) == 0
    return tmp / "run"


def _copy(finished: Path, target: Path) -> Path:
    shutil.copytree(finished, target)
    return target


@pytest.fixture(scope="module")
def outputs(finished, tmp_path_factory) -> Path:
    """An outputs/ folder: finished, interrupted, failed, early-stopped and damaged runs, and a comparison."""
    out = tmp_path_factory.mktemp("outputs")
    _copy(finished, out / "done")
    (_copy(finished, out / "interrupted") / "results.json").unlink()
    stopped = _copy(finished, out / "nested" / "stopped")
    results = json.loads((stopped / "results.json").read_text())
    (stopped / "results.json").write_text(json.dumps({**results, "stopped_early": True, "stopped_epoch": 1,
                                                        "stop_reason": "dev_acc did not improve for 1 epoch"}))
    failed = _copy(finished, out / "failed")
    (failed / "results.json").write_text(json.dumps({"status": "failed", "reason": "loss became nan at epoch 1"}))
    (_copy(finished, out / "corrupt") / "results.json").write_text('{"status": "finis')
    metrics = _copy(finished, out / "truncated") / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:-20])
    (_copy(finished, out / "no_config") / "config.yaml").unlink()
    _copy(finished, out / ".old.replaced-123")  # moved aside by --overwrite: not a run to list
    cmp = out / "cmp"
    _copy(finished, cmp / "a" / "seed0")
    _copy(finished, cmp / "b" / "seed0")
    (cmp / "comparison.json").write_text(json.dumps({"name": "cmp", "seeds": [0],
                                                     "variants": [{"label": "a"}, {"label": "b"}]}))
    return out


def _by_name(entries: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in entries}


def test_every_kind_of_run_gets_its_status_and_reason(outputs):
    entries = _by_name(collect(outputs))
    assert set(entries) == {"done", "interrupted", "nested/stopped", "failed", "corrupt", "truncated", "no_config",
                            "cmp"}
    assert {name: e["status"] for name, e in entries.items()} == {
        "done": "finished", "interrupted": "interrupted", "nested/stopped": "early-stopped", "failed": "failed",
        "corrupt": "broken", "truncated": "broken", "no_config": "broken", "cmp": "finished"}
    assert "results.json" in entries["corrupt"]["reason"]
    assert "metrics.jsonl line 1" in entries["truncated"]["reason"]
    assert "config.yaml" in entries["no_config"]["reason"]
    assert entries["failed"]["reason"] == "loss became nan at epoch 1"


def test_a_finished_run_shows_model_data_epochs_accuracy_and_time(outputs, finished):
    done = _by_name(collect(outputs))["done"]
    results = json.loads((finished / "results.json").read_text())
    (env,) = json.loads((finished / "env.json").read_text())["sessions"]
    assert (done["model"], done["dataset"], done["epochs_completed"], done["epochs"]) == ("lenet", "mnist", 1, 1)
    assert done["test_acc"] == results["test_acc"] and done["test_samples"] == 100
    assert done["best_dev_acc"] == results["best_dev_acc"] and done["wall_seconds"] == results["wall_seconds"]
    assert done["started"] == env["started"]
    interrupted = _by_name(collect(outputs))["interrupted"]
    assert interrupted["epochs_completed"] == 1 and interrupted["test_acc"] is None


def test_a_comparison_lists_its_runs_under_it(outputs):
    entries = _by_name(collect(outputs))
    cmp = entries["cmp"]
    assert cmp["kind"] == "comparison" and cmp["variants"] == ["a", "b"]
    assert sorted(r["name"] for r in cmp["runs"]) == ["cmp/a/seed0", "cmp/b/seed0"]
    assert "cmp/a/seed0" not in entries  # listed once, under its comparison


def test_a_resumed_run_counts_the_epochs_of_its_earlier_start(finished, tmp_path):
    run_dir = _copy(finished, tmp_path / "resumed")
    (first,) = json.loads((run_dir / "env.json").read_text())["sessions"]
    second = {**first, "resumed": True, "start_epoch": 1}
    (run_dir / "env.json").write_text(json.dumps({"sessions": [first, second]}))
    results = json.loads((run_dir / "results.json").read_text())
    epoch_1 = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["epoch_seconds"]
    (entry,) = collect(tmp_path)
    assert entry["wall_seconds"] == pytest.approx(results["wall_seconds"] + epoch_1)
    assert entry["starts"] == 2


def test_a_run_being_trained_is_running(finished, tmp_path):
    run_dir = _copy(finished, tmp_path / "live")
    with rundir.locked(run_dir):  # what train holds
        assert collect(tmp_path)[0]["status"] == "running"
    assert collect(tmp_path)[0]["status"] == "finished"
    (run_dir / ".lock").write_text("999999\n")  # left behind by a killed run: not held
    assert collect(tmp_path)[0]["status"] == "finished"


def test_the_table_and_json(outputs, capsys):
    assert main(["runs", str(outputs)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "model", "dataset", "status", "epochs", "best", "dev", "test", "wall",
                                "started", "note"]
    done = next(line for line in table if line.startswith("done "))
    assert "lenet" in done and "finished" in done and "1/1" in done and "% (100)" in done
    assert any(line.startswith("  cmp/a/seed0 ") for line in table)
    assert any(line.startswith("corrupt ") and "broken" in line and "results.json" in line for line in table)
    assert main(["runs", str(outputs), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dir"] == str(outputs.resolve())
    starts = [e["started"] for e in data["entries"]]
    assert starts == sorted(starts) and len(data["entries"]) == 8


def test_empty_and_missing_folders(tmp_path, capsys):
    assert main(["runs", str(tmp_path)]) == 0
    assert "no runs" in capsys.readouterr().out
    assert main(["runs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == []
    assert main(["runs", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_runs_does_not_import_paddle(outputs):
    code = ("import sys; from paddle_cnn.cli import main; assert main(['runs', sys.argv[1]]) == 0; "
            "assert 'paddle' not in sys.modules, 'paddle was imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(outputs)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    assert "finished" in proc.stdout


@pytest.mark.parametrize("args", [["runs", "{outputs}"], ["report", "configs/lenet_mnist.yaml"]],
                         ids=["runs", "report"])
def test_a_reader_that_stops_early_gets_no_traceback(outputs, args):
    # `paddle-cnn runs | head`: the pipe's read end is closed before anything is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    argv = [a.format(outputs=outputs) for a in args]
    proc = subprocess.run([sys.executable, "-m", "paddle_cnn", *argv], stdout=write_end, stderr=subprocess.PIPE,
                          text=True, timeout=120, cwd=Path(__file__).parent.parent)
    os.close(write_end)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
