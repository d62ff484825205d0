"""End-to-end `paddle-cnn train` / `evaluate` / `report` on tiny real-format data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml
from visualdl import LogReader

from paddle_cnn.cli import main
from paddle_cnn.config import load_config

RUN_FILES = ["config.yaml", "env.json", "model_report.txt", "model_report.json", "metrics.jsonl",
             "results.json", "curves.png", "checkpoints/best.pdparams", "checkpoints/last.pdckpt"]


def _scalars(run_dir: Path, split: str, tag: str) -> list[tuple[int, float]]:
    path = next((run_dir / "vdl" / split).glob("vdlrecords*"))
    return [(r.id, r.value) for r in LogReader(file_path=str(path)).get_data("scalar", tag)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root):
    """One tiny training run shared by the checks below (2 epochs, ~5 s)."""
    from conftest import tiny_config

    tmp = tmp_path_factory.mktemp("run")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data_root)))
    run_dir = tmp / "out"
    assert main(["train", str(config), "--output-dir", str(run_dir), "-o", "train.epochs=3"]) == 0
    return run_dir, config


def test_run_directory_has_every_file(finished_run):
    run_dir, _ = finished_run
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resolved_config_includes_the_override(finished_run):
    run_dir, _ = finished_run
    cfg = load_config(run_dir / "config.yaml")
    assert cfg.train.epochs == 3 and cfg.model.name == "lenet"


def test_metrics_have_one_row_per_epoch_with_true_means(finished_run):
    run_dir, _ = finished_run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert set(r) >= {"train_loss", "train_acc", "dev_loss", "dev_acc", "lr", "epoch_seconds", "images_per_s"}
        assert 0 <= r["dev_acc"] <= 1 and r["train_loss"] > 0 and r["images_per_s"] > 0
    # The synthetic data is learnable: the model must beat chance (10%) by far.
    assert rows[-1]["dev_acc"] > 0.5
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_dev_loss_is_the_mean_over_the_whole_dev_set(finished_run, data_root):
    """hapi reports the last batch's loss; we report the mean over all 100 dev images."""
    from paddle_cnn.data import BatchLoader
    from paddle_cnn.evaluate import evaluate_split, load_run

    run_dir, _ = finished_run
    cfg, loaders, model = load_run(run_dir)
    whole = evaluate_split(model, loaders["dev"])
    per_image = evaluate_split(model, BatchLoader(loaders["dev"].split, batch_size=1))
    assert whole["samples"] == per_image["samples"] == 100
    assert whole["loss"] == pytest.approx(per_image["loss"], rel=1e-4)


def test_results_come_from_the_best_checkpoint(finished_run):
    run_dir, _ = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: r["dev_acc"])
    assert results["status"] == "finished"
    assert results["best_epoch"] == best["epoch"] and results["best_dev_acc"] == best["dev_acc"]
    assert results["test_samples"] == 100 and 0 <= results["test_acc"] <= 1
    assert results["wall_seconds"] > 0


def test_evaluate_reproduces_the_test_result(finished_run, capsys):
    run_dir, _ = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    assert main(["evaluate", str(run_dir)]) == 0
    assert "on 100 images" in capsys.readouterr().out
    updated = json.loads((run_dir / "results.json").read_text())
    assert updated["evaluations"]["test"]["acc"] == pytest.approx(results["test_acc"])
    assert main(["evaluate", str(run_dir), "--split", "dev"]) == 0
    dev = json.loads((run_dir / "results.json").read_text())["evaluations"]["dev"]
    assert dev["acc"] == pytest.approx(results["best_dev_acc"])


def test_model_report_files(finished_run):
    run_dir, _ = finished_run
    report = json.loads((run_dir / "model_report.json").read_text())
    assert report["trainable_params"] == 61706 and report["macs"] == 423344
    assert "multiply-accumulates" in (run_dir / "model_report.txt").read_text()


def test_env_records_threads_and_versions(finished_run):
    env = json.loads((finished_run[0] / "env.json").read_text())["sessions"][-1]
    assert env["paddle"] == paddle.__version__
    assert int(env["omp_num_threads"]) >= 1 and env["device"].startswith("cpu")
    assert "train" in env["command"]


def test_visualdl_logs_train_and_dev_on_an_epoch_axis(finished_run):
    run_dir, _ = finished_run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for split in ("train", "dev"):
        logged = _scalars(run_dir, split, "epoch/loss")
        assert [step for step, _ in logged] == [1, 2, 3]
        assert [v for _, v in logged] == pytest.approx([r[f"{split}_loss"] for r in rows], rel=1e-6)
    assert [s for s, _ in _scalars(run_dir, "train", "epoch/lr")] == [1, 2, 3]
    steps = [s for s, _ in _scalars(run_dir, "train", "step/loss")]
    assert steps and steps == sorted(steps)


def test_checkpoints_load_into_a_fresh_model(finished_run):
    from paddle_cnn.registry import build_model

    run_dir, _ = finished_run
    net = build_model("lenet")
    best = paddle.load(str(run_dir / "checkpoints" / "best.pdparams"))
    # set_state_dict only warns about keys it cannot place: its return value says which.
    assert net.set_state_dict(best) == ([], [])
    assert all(np.array_equal(value.numpy(), best[key].numpy()) for key, value in net.state_dict().items())
    state = paddle.load(str(run_dir / "checkpoints" / "last.pdckpt"))
    assert state["meta"]["epoch"] == 3 and set(state) == {"model", "optimizer", "meta"}
    assert build_model("lenet").set_state_dict(state["model"]) == ([], [])


def test_finished_run_directory_is_not_overwritten(finished_run, capsys):
    run_dir, config = finished_run
    before = (run_dir / "results.json").read_bytes()
    assert main(["train", str(config), "--output-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--overwrite" in err
    assert (run_dir / "results.json").read_bytes() == before


def test_report_command_prints_params_and_macs(write_config, capsys):
    assert main(["report", str(write_config(model={"name": "lenet5"}, data={"resize": 32}))]) == 0
    out = capsys.readouterr().out
    assert "61,706" in out and "423,344" in out and "MACs" in out


def test_train_script_wraps_the_cli(write_config, tmp_path, monkeypatch, capsys):
    import runpy
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    out = tmp_path / "script_run"
    monkeypatch.setattr(sys, "argv", [str(script), "--config", str(write_config()), "--output-dir", str(out),
                                      "-o", "train.epochs=1"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")  # in-process: the wrapper is 8 lines over main()
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert (out / "results.json").is_file() and "run directory" in capsys.readouterr().out


def test_cifar10_trains_through_the_same_command(write_config, tmp_path):
    cfg = write_config(data={"name": "cifar10", "dev_size": 40, "dev_split": "tail", "test_size": 50,
                             "augment": {"crop_padding": 4, "horizontal_flip": True}},
                       model={"name": "lenet5", "in_channels": 3})
    out = tmp_path / "cifar"
    assert main(["train", str(cfg), "--output-dir", str(out), "-o", "train.epochs=1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["train_samples"] == 160 and results["dev_samples"] == 40 and results["test_samples"] == 50


def test_evaluate_writes_a_confusion_matrix_and_per_class_accuracy(finished_run):
    run_dir, _ = finished_run
    assert main(["evaluate", str(run_dir)]) == 0
    test = json.loads((run_dir / "results.json").read_text())["evaluations"]["test"]
    matrix = test["confusion_matrix"]
    assert sum(map(sum, matrix)) == test["samples"] == 100 and len(matrix) == 10
    correct = sum(matrix[i][i] for i in range(10))
    assert correct / 100 == pytest.approx(test["acc"])
    assert set(test["per_class_acc"]) == {str(i) for i in range(10)}
    assert (run_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
