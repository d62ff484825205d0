"""A run's history survives resumes (train.log, env.json), and reopening a run finds its data without
the $PADDLE_CNN_DATA that train was given."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from paddle_cnn import runlog
from paddle_cnn.cli import main
from paddle_cnn.config import DataConfig
from paddle_cnn.data import with_recorded_root

from conftest import tiny_config


def _config(tmp: Path, data_root: Path | None, **train) -> Path:
    cfg = tiny_config(data_root or Path("."), train={"epochs": 1, **train})
    if data_root is None:
        del cfg["data"]["root"]  # found through $PADDLE_CNN_DATA, as users of the README do
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, data_root):
    """A finished one-epoch run, and what its training printed."""
    tmp = tmp_path_factory.mktemp("history")
    run_dir = tmp / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", str(_config(tmp, data_root)), "--output-dir", str(run_dir)]) == 0
    return run_dir, out.getvalue()


def _resume(run_dir: Path, capsys) -> str:
    assert main(["train", "--resume", str(run_dir), "-o", "train.epochs=2"]) == 0
    return capsys.readouterr().out


def test_train_log_keeps_every_line_of_both_starts(one_epoch, tmp_path, capsys):
    source, first_output = one_epoch
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    second_output = _resume(run_dir, capsys)
    log = (run_dir / "train.log").read_text()
    printed = [line for out in (first_output, second_output) for line in out.splitlines()  # what `log` printed
               if line.startswith("epoch ") or (line.startswith("run directory: ") and " train / " in line)]
    assert any(line.startswith("epoch 1/1: ") for line in printed) and any(
        line.startswith("epoch 2/2: ") for line in printed)
    lines = log.splitlines()
    for line in printed:
        assert line in lines, line  # the first start's lines were not truncated by the resume
    headers = [line for line in lines if line.startswith("== ")]
    assert [h.split(" ", 2)[2].split(":")[0] for h in headers] == [
        "start, train.epochs 1", "finished", "resume after epoch 1, train.epochs 2", "finished"]
    assert lines.index(next(h for h in headers if "resume" in h)) > lines.index(
        next(line for line in lines if line.startswith("epoch 1/1: ")))


def test_env_json_keeps_a_record_of_every_start(one_epoch, tmp_path, capsys):
    source, _ = one_epoch
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    (first,) = json.loads((run_dir / "env.json").read_text())["sessions"]
    assert first["resumed"] is False and first["start_epoch"] == 0 and "paddle" in first
    _resume(run_dir, capsys)
    sessions = json.loads((run_dir / "env.json").read_text())["sessions"]
    assert sessions[0] == first and len(sessions) == 2
    assert sessions[1]["resumed"] is True and sessions[1]["start_epoch"] == 1
    assert sessions[1]["command"][:3] == ["paddle-cnn", "train", "--resume"]
    assert sessions[1]["started"] >= first["started"]


def test_an_old_single_record_env_json_is_extended_not_lost(one_epoch, tmp_path, capsys):
    source, _ = one_epoch
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    (record,) = json.loads((run_dir / "env.json").read_text())["sessions"]
    old = {k: v for k, v in record.items() if k not in ("started", "start_epoch", "data_root")}
    (run_dir / "env.json").write_text(json.dumps(old))  # what versions before the history wrote
    assert runlog.read_sessions(run_dir) == [old]
    _resume(run_dir, capsys)
    sessions = json.loads((run_dir / "env.json").read_text())["sessions"]
    assert sessions[0] == old and sessions[1]["resumed"] is True and len(sessions) == 2


def test_an_unreadable_env_json_does_not_stop_a_resume_and_is_kept(one_epoch, tmp_path, capsys):
    source, _ = one_epoch
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    (run_dir / "env.json").write_text('{"python": "3.11", "trunc')
    _resume(run_dir, capsys)
    sessions = json.loads((run_dir / "env.json").read_text())["sessions"]
    assert sessions[0] == {"unreadable_env_json": '{"python": "3.11", "trunc'} and sessions[1]["resumed"] is True


@pytest.fixture
def env_trained_run(tmp_path, data_root, monkeypatch):
    """A run trained with a relative $PADDLE_CNN_DATA and no data.root; afterwards the variable is gone,
    the working directory is another, and Paddle's cache (under $HOME) is empty."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(data_root.parent)
    monkeypatch.setenv("PADDLE_CNN_DATA", data_root.name)
    run_dir = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, None)), "--output-dir", str(run_dir)]) == 0
    monkeypatch.delenv("PADDLE_CNN_DATA")
    monkeypatch.chdir(tmp_path)
    return run_dir


def test_evaluate_predict_export_and_resume_find_the_data_without_the_variable(env_trained_run, data_root,
                                                                               capsys):
    run_dir = env_trained_run
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["root"] is None
    assert runlog.recorded_data_root(run_dir) == str(data_root.resolve())  # made absolute
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--split", "dev"]) == 0
    assert "on 100 images" in capsys.readouterr().out
    assert main(["predict", str(run_dir), "--count", "3"]) == 0
    assert main(["export", str(run_dir)]) == 0
    spec = json.loads((run_dir / "inference" / "preprocess.json").read_text())
    assert spec["dataset"]["data_root"] == str(data_root.resolve()) and spec["dataset"]["data"]["root"] is None
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run_dir / "inference")]) == 0
    assert "on 100 images" in capsys.readouterr().out
    assert main(["predict", "--model", str(run_dir / "inference"), "--count", "3"]) == 0
    assert main(["train", "--resume", str(run_dir), "-o", "train.epochs=2"]) == 0


def test_the_variable_and_data_root_still_win_over_the_recorded_root(env_trained_run, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.setenv("PADDLE_CNN_DATA", str(empty))
    assert main(["evaluate", str(env_trained_run)]) == 2
    assert f"under {empty}" in capsys.readouterr().err
    recorded = runlog.recorded_data_root(env_trained_run)
    assert with_recorded_root(DataConfig(root=str(empty)), recorded).root == str(empty)


def test_a_recorded_root_that_lost_its_files_falls_back_to_paddles_cache(env_trained_run, data_root, monkeypatch):
    recorded = runlog.recorded_data_root(env_trained_run)
    assert with_recorded_root(DataConfig(), recorded).root == recorded
    assert with_recorded_root(DataConfig(name="cifar10"), str(data_root / "mnist")).root is None
    assert with_recorded_root(DataConfig(), None).root is None
