"""Reliability (issue 5): bad input, interruption, resume and reproducibility, through the CLI.

Every test drives `paddle-cnn` itself, in-process through cli.main or as a real subprocess where a
real signal must be delivered, and checks the exit code, the key words of the message, that no
traceback leaks, and what the run directory holds afterwards.
"""

from __future__ import annotations

import io
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml
from visualdl import LogReader

from paddle_cnn.cli import main

from conftest import popen, run_cli, tiny_config, write_cifar, write_mnist

ENV = {"OMP_NUM_THREADS": "1"}
# Wall-clock fields differ between any two runs; everything else in a metrics row must not.
TIMING = {"epoch_seconds", "train_seconds", "images_per_s", "elapsed_seconds"}
# Slow enough learning that losses and dev accuracy still change from epoch to epoch, and 4 steps
# per epoch so that 30 epochs take a few seconds: long enough to be interrupted mid-run.
GRADUAL = {"optimizer": {"lr": 0.002}, "data": {"train_size": 200}}


# ----------------------------------------------------------------------------- helpers


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int, err: str, *words: str, exit_code: int = 2) -> None:
    """A user-facing failure: the given exit code, every key word, no traceback."""
    assert code == exit_code, err
    assert "Traceback" not in err, err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder with its bytes (to prove nothing was touched)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    text = (run_dir / "metrics.jsonl").read_text()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in text.splitlines()]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def vdl_scalars(run_dir: Path, split: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar tag; VisualDL shows only the newest file, so there must be one."""
    files = sorted((run_dir / "vdl" / split).glob("vdlrecords*"))
    assert len(files) == 1, files
    return [(r.id, r.value) for r in LogReader(file_path=str(files[0])).get_data("scalar", tag)]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Metrics, VisualDL logs, best weights and results identical to an uninterrupted run."""
    expected = rows(reference)
    assert rows(run_dir) == expected  # floats compared with ==: bit-identical losses
    n = len(expected)
    for split in ("train", "dev"):
        logged = vdl_scalars(run_dir, split, "epoch/loss")
        assert [step for step, _ in logged] == list(range(1, n + 1)), split
        assert logged == vdl_scalars(reference, split, "epoch/loss"), split
    assert vdl_scalars(run_dir, "train", "step/loss") == vdl_scalars(reference, "train", "step/loss")
    best, ref_best = (paddle.load(str(d / "checkpoints" / "best.pdparams")) for d in (run_dir, reference))
    assert set(best) == set(ref_best)
    assert all(np.array_equal(best[k].numpy(), ref_best[k].numpy()) for k in best)
    got, want = results(run_dir), results(reference)
    for key in ("status", "epochs_completed", "best_epoch", "best_dev_acc", "test_acc", "test_loss"):
        assert got[key] == want[key], key
    assert got["status"] == "finished" and got["epochs_completed"] == n


def no_temp_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if ".tmp-" in p.name]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root):
    """A finished 2-epoch run (in-process), copied by the tests that modify it."""
    tmp = tmp_path_factory.mktemp("finished")
    config = write_yaml(tmp / "gradual.yaml", tiny_config(data_root, **GRADUAL))
    assert main(["train", str(config), "--output-dir", str(tmp / "run")]) == 0
    return tmp / "run", config


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A private copy of the finished run."""
    return Path(shutil.copytree(finished_run[0], tmp_path / "run"))


# ----------------------------------------------------------------------------- config errors


def test_yaml_syntax_error_names_the_line_and_creates_nothing(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("data:\n  name: mnist\n model: [\n")
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "train", str(config), "--output-dir", str(out))
    assert_refused(code, err, "broken.yaml", "YAML syntax error", "line 3")
    assert not out.exists()


@pytest.mark.parametrize("override, words", [
    ("optimizer.lrr=0.1", ["unknown key 'optimizer.lrr'", "did you mean 'lr'"]),
    ("train.batch_size=big", ["train.batch_size", "expected an integer", "'big'"]),
    ("optimizer.lr=-0.1", ["optimizer.lr", "-0.1", "greater than 0"]),
    ("train.batch_size=0", ["train.batch_size", "below the minimum 1"]),
    ("data.name=imagenet", ["data.name", "'mnist', 'cifar10'"]),
    ("optimizer.name=adamm", ["optimizer.name", "'sgd'", "'momentum'", "'adam'"]),
    ("model.name=lenett", ["unknown model 'lenett'", "lenet", "lenet5", "resnet18"]),
    ("model.stem=cifar", ["model.stem", "'lenet' has no such option"]),
    ("optimizer.lr", ["override 'optimizer.lr' does not parse", "section.key=value"]),
    ("optimizer.lr=[1,", ["override", "not valid YAML"]),
    ("data.train_size=100000", ["data.train_size = 100000", "larger than"]),
    ("data.test_size=5000", ["data.test_size = 5000", "larger than"]),
], ids=["unknown-key", "wrong-type", "negative-lr", "zero-batch", "unknown-dataset", "unknown-optimizer",
        "unknown-model", "option-model-lacks", "override-no-equals", "override-bad-yaml", "train-subset-too-big",
        "test-subset-too-big"])
def test_config_error_through_the_cli_leaves_no_run_directory(write_config, tmp_path, capsys, override, words):
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "train", str(write_config()), "--output-dir", str(out), "-o", override)
    assert_refused(code, err, *words)
    assert not out.exists(), list(out.rglob("*"))


@pytest.mark.parametrize("override, words", [
    ("model.name=lenett", ["unknown model 'lenett'", "lenet5"]),
    ("model.use_residual=true", ["model.use_residual", "'lenet' has no such option"]),
], ids=["unknown-model", "option-model-lacks"])
def test_model_errors_are_reported_before_the_data_is_read(write_config, tmp_path, capsys, override, words):
    """The data root does not exist either: the model error must come first, without waiting for data."""
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "train", str(write_config(data={"root": str(tmp_path / "no-data")})),
                            "--output-dir", str(out), "-o", override)
    assert_refused(code, err, *words)
    assert "data not found" not in err and not out.exists()


@pytest.mark.parametrize("override, words", [
    ("model.name=lenett", ["unknown model 'lenett'"]),
    ("data.root=/nonexistent/data", ["mnist data not found", "/nonexistent/data"]),
    ("data.train_size=100000", ["data.train_size = 100000"]),
], ids=["model-typo", "missing-data", "subset-too-big"])
def test_failed_overwrite_keeps_the_run_it_was_meant_to_replace(run_copy, finished_run, capsys, override, words):
    before = snapshot(run_copy)
    code, _, err = run_main(capsys, "train", str(finished_run[1]), "--output-dir", str(run_copy),
                            "--overwrite", "-o", override)
    assert_refused(code, err, *words)
    assert snapshot(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]  # nothing moved aside is left


def test_overwrite_replaces_a_finished_run(run_copy, finished_run, capsys):
    code, _, err = run_main(capsys, "train", str(finished_run[1]), "--output-dir", str(run_copy), "--overwrite",
                            "-o", "train.epochs=1")
    assert code == 0, err
    assert [r["epoch"] for r in rows(run_copy)] == [1] and results(run_copy)["epochs_completed"] == 1
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]


# ----------------------------------------------------------------------------- data errors


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())


CIFAR_MEMBERS = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _cifar_archive(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


MNIST_DAMAGE = {
    "missing": (lambda d: (d / "train-labels-idx1-ubyte.gz").unlink(),
                ["missing train-labels-idx1-ubyte.gz", "Expected:", "t10k-images-idx3-ubyte.gz", "data.root"]),
    "truncated-gz": (lambda d: _truncate(d / "train-images-idx3-ubyte.gz"),
                     ["train-images-idx3-ubyte.gz", "truncated or corrupt"]),
    "corrupt-gz": (lambda d: _garbage(d / "t10k-labels-idx1-ubyte.gz"),
                   ["t10k-labels-idx1-ubyte.gz", "not a readable gzip"]),
    "labels-as-images": (lambda d: shutil.copy(d / "train-labels-idx1-ubyte.gz", d / "train-images-idx3-ubyte.gz"),
                         ["train-images-idx3-ubyte.gz", "images (magic 2051)", "magic 2049", "swapped"]),
}


@pytest.mark.parametrize("damage", list(MNIST_DAMAGE))
def test_damaged_mnist_is_a_data_error_and_creates_no_run(tmp_path, capsys, damage):
    root = tmp_path / "data"
    MNIST_DAMAGE[damage][0](write_mnist(root))
    config = write_yaml(tmp_path / "c.yaml", tiny_config(root))
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "train", str(config), "--output-dir", str(out))
    assert_refused(code, err, *MNIST_DAMAGE[damage][1])
    if damage == "missing":
        assert str(root) in err
    assert not out.exists()


CIFAR_DAMAGE = {
    "missing": (lambda p: p.unlink(), ["missing cifar-10-python.tar.gz", "data.root"]),
    "truncated": (_truncate, ["cifar-10-python.tar.gz", "not a readable tar.gz"]),
    "corrupt": (_garbage, ["cifar-10-python.tar.gz", "not a readable tar.gz"]),
    "members-missing": (lambda p: _cifar_archive(p, {"data_batch_1": b"x", "readme": b"x"}),
                        ["has no data_batch_2", "data_batch_5", "cifar-10-batches-py"]),
    "member-not-a-pickle": (
        lambda p: _cifar_archive(p, {n: b"not a pickle" for n in CIFAR_MEMBERS}),
        ["cifar-10-python.tar.gz", "could not be unpickled"]),
}


@pytest.mark.parametrize("damage", list(CIFAR_DAMAGE))
def test_damaged_cifar_archive_is_a_data_error_and_creates_no_run(tmp_path, capsys, damage):
    root = tmp_path / "data"
    CIFAR_DAMAGE[damage][0](write_cifar(root))
    config = write_yaml(tmp_path / "c.yaml", tiny_config(root, data={"name": "cifar10", "dev_size": 40},
                                                         model={"name": "lenet5", "in_channels": 3}))
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "train", str(config), "--output-dir", str(out))
    assert_refused(code, err, *CIFAR_DAMAGE[damage][1])
    assert not out.exists()


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_download_while_offline_fails_fast(tmp_path, dataset):
    """This machine has no internet: a real download attempt must fail with advice, not hang."""
    config = write_yaml(tmp_path / "c.yaml", tiny_config(tmp_path / "empty", data={"name": dataset, "download": True}))
    started = time.monotonic()
    proc = run_cli("train", str(config), "--output-dir", str(tmp_path / "out"), env=ENV, timeout=60)
    assert time.monotonic() - started < 30
    assert_refused(proc.returncode, proc.stderr, "data.download is true", "cannot be reached", "data.root")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- checkpoints


def test_evaluate_refuses_weights_of_a_different_number_of_classes(run_copy, capsys):
    config = run_copy / "config.yaml"
    config.write_text(config.read_text().replace("num_classes: 10", "num_classes: 12"))
    before = snapshot(run_copy)
    code, _, err = run_main(capsys, "evaluate", str(run_copy))
    assert_refused(code, err, "best.pdparams", "different model", "[12]", "[10]", "model.num_classes")
    assert snapshot(run_copy) == before


def test_evaluate_refuses_weights_of_a_different_model(run_copy, capsys):
    config = run_copy / "config.yaml"
    config.write_text(config.read_text().replace("name: lenet\n", "name: nin\n"))
    code, _, err = run_main(capsys, "evaluate", str(run_copy))
    assert_refused(code, err, "best.pdparams", "different model", "missing", "model.name")


def test_evaluate_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_main(capsys, "evaluate", str(tmp_path))
    assert_refused(code, err, "not a run directory", "config.yaml")


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_main(capsys, "train", "--resume", str(tmp_path / "nothing"))
    assert_refused(code, err, "not a run directory", "nothing to resume")
    assert not (tmp_path / "nothing").exists()


def test_evaluate_refuses_a_truncated_best_checkpoint(run_copy, capsys):
    _truncate(run_copy / "checkpoints" / "best.pdparams")
    code, _, err = run_main(capsys, "evaluate", str(run_copy))
    assert_refused(code, err, "best.pdparams", "cannot be read", "truncated")


def test_resume_refuses_a_truncated_last_checkpoint_and_changes_nothing(run_copy, capsys):
    (run_copy / "results.json").unlink()  # make it an unfinished run
    _truncate(run_copy / "checkpoints" / "last.pdckpt")
    before = snapshot(run_copy)
    code, _, err = run_main(capsys, "train", "--resume", str(run_copy), "-o", "train.epochs=4")
    assert_refused(code, err, "last.pdckpt", "cannot be read", "truncated")
    assert snapshot(run_copy) == before  # not even config.yaml took the override


def test_init_from_a_missing_run_fails_before_creating_the_run(write_config, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "train", str(write_config(model={"init_from": str(tmp_path / "nowhere")})),
                            "--output-dir", str(out))
    assert_refused(code, err, "nowhere", "best.pdparams", "does not exist")
    assert not out.exists()


def test_init_from_a_run_of_another_architecture_is_refused(write_config, finished_run, tmp_path, capsys):
    # The finished run is a LeNet; NiN shares no tensor name and shape with it.
    config = write_config(model={"name": "nin", "init_from": str(finished_run[0])}, data={"resize": 32},
                          train={"epochs": 1})
    code, _, err = run_main(capsys, "train", str(config), "--output-dir", str(tmp_path / "out"))
    assert_refused(code, err, "model.init_from", "no tensor", "another architecture")


# ----------------------------------------------------------------------------- output directory


def test_finished_run_directory_is_refused_with_both_ways_out(run_copy, finished_run, capsys):
    before = snapshot(run_copy)
    code, _, err = run_main(capsys, "train", str(finished_run[1]), "--output-dir", str(run_copy))
    assert_refused(code, err, "already holds a finished run", "--overwrite", "--resume")
    assert snapshot(run_copy) == before


def test_unfinished_run_directory_is_refused_with_the_resume_command(run_copy, finished_run, capsys):
    (run_copy / "results.json").unlink()
    before = snapshot(run_copy)
    code, _, err = run_main(capsys, "train", str(finished_run[1]), "--output-dir", str(run_copy))
    assert_refused(code, err, "unfinished run", f"paddle-cnn train --resume {run_copy}")
    assert snapshot(run_copy) == before


def test_resume_and_overwrite_do_not_mix(run_copy, capsys):
    code, _, err = run_main(capsys, "train", "--resume", str(run_copy), "--overwrite")
    assert_refused(code, err, "--resume", "--overwrite")


@pytest.mark.parametrize("text", ["", "# every default, please\n\n"], ids=["empty", "comments-only"])
def test_an_empty_config_is_refused_and_trains_nothing(tmp_path, capsys, text, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default outputs/<name> would go
    config = tmp_path / "empty.yaml"
    config.write_text(text)
    code, _, err = run_main(capsys, "train", str(config))
    assert_refused(code, err, "is empty", "model: {name: lenet}")
    assert not (tmp_path / "outputs").exists()
    (tmp_path / "base.yaml").write_text(text)
    write_yaml(tmp_path / "cmp.yaml", {"base": "base.yaml", "vary": {"train.seed": [0, 1]}})
    code, _, err = run_main(capsys, "compare", str(tmp_path / "cmp.yaml"))
    assert_refused(code, err, "is empty")


def test_an_explicit_one_line_config_means_every_default(tmp_path):
    from paddle_cnn.config import Config, load_config, to_dict

    for text in ("{}\n", "model: {name: lenet}\n"):
        (tmp_path / "all_defaults.yaml").write_text(text)
        assert to_dict(load_config(tmp_path / "all_defaults.yaml")) == to_dict(Config())


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a directory")
    return path


@pytest.mark.parametrize("command", ["train", "compare", "bench", "export"])
def test_an_output_path_under_a_regular_file_is_a_clear_error(command, a_file, finished_run, tmp_path, capsys):
    argv = {
        "train": ["train", str(finished_run[1]), "--output-dir", str(a_file / "run")],
        "compare": ["compare", str(write_yaml(tmp_path / "cmp.yaml", {"base": str(finished_run[1]),
                                                                       "vary": {"train.seed": [0, 1]}})),
                    "--output-dir", str(a_file / "sub" / "cmp")],
        "bench": ["bench", "--models", "lenet", "--batch", "2", "--no-torch", "--json", str(a_file / "bench.json")],
        "export": ["export", str(finished_run[0]), "--output", str(a_file / "inference")],
    }[command]
    code, _, err = run_main(capsys, *argv)
    assert_refused(code, err, f"under {a_file}, which is a file", "Choose another")
    assert a_file.read_text() == "not a directory"


def test_an_output_dir_that_is_a_file_and_a_bench_json_that_is_a_dir(a_file, finished_run, tmp_path, capsys):
    code, _, err = run_main(capsys, "train", str(finished_run[1]), "--output-dir", str(a_file))
    assert_refused(code, err, "exists and is a file")
    code, _, err = run_main(capsys, "bench", "--no-torch", "--json", str(tmp_path))
    assert_refused(code, err, "is a directory", "--json")
    assert a_file.read_text() == "not a directory"


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_run_dir_under_a_regular_file_is_a_clear_error(command, a_file, capsys):
    code, _, err = run_main(capsys, command, str(a_file / "run"))
    assert_refused(code, err, "not a run directory")


def test_an_os_error_mid_command_is_one_paragraph_not_a_traceback(finished_run, tmp_path, capsys, monkeypatch):
    from paddle_cnn import evaluate

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "evaluate_run", full_disk)
    code, _, err = run_main(capsys, "evaluate", str(finished_run[0]))
    assert_refused(code, err, "No space left on device", "half-written", exit_code=1)


def test_a_run_being_written_is_refused_naming_its_pid(run_copy, finished_run, capsys):
    from paddle_cnn import rundir

    (run_copy / "results.json").unlink()  # an unfinished run, as one in progress is
    before = snapshot(run_copy)
    with rundir.locked(run_copy):
        for argv in (["train", "--resume", str(run_copy)],
                     ["train", str(finished_run[1]), "--output-dir", str(run_copy)],
                     ["train", str(finished_run[1]), "--output-dir", str(run_copy), "--overwrite"]):
            code, _, err = run_main(capsys, *argv)
            assert_refused(code, err, "being written by another paddle-cnn process", f"pid {os.getpid()}")
        after = snapshot(run_copy)
    assert {k: v for k, v in after.items() if k != ".lock"} == before
    assert not (run_copy / ".lock").exists()  # released, and removed, at the end of the block
    code, _, err = run_main(capsys, "train", "--resume", str(run_copy))
    assert code == 0, err


def test_a_comparison_being_written_is_not_deleted_by_overwrite(comparison_run, capsys):
    from paddle_cnn import rundir

    out, config = comparison_run
    variant = next(p.parent for p in out.rglob("results.json") if p.parent.name.startswith("seed"))
    with rundir.locked(variant):
        code, _, err = run_main(capsys, "compare", str(config), "--output-dir", str(out), "--overwrite")
    assert_refused(code, err, "being written by another paddle-cnn process", f"pid {os.getpid()}")
    assert (variant / "results.json").is_file()


@pytest.fixture
def comparison_run(tmp_path, finished_run) -> tuple[Path, Path]:
    config = write_yaml(tmp_path / "cmp.yaml", {"base": str(finished_run[1]), "vary": {"train.seed": [0]},
                                                 "overrides": {"train.epochs": 1}})
    assert main(["compare", str(config), "--output-dir", str(tmp_path / "cmp")]) == 0
    return tmp_path / "cmp", config


# ----------------------------------------------------------------------------- numerical failure


def _poison(monkeypatch, epoch: int, batch: int) -> None:
    """Turn the network's weights to NaN just before one training batch, so its loss is NaN exactly there.

    (Poisoning that batch's images would not do: all-NaN or all-inf images come out of paddle's CPU
    ReLU/max-pool as finite numbers, and the loss stays finite.)
    """
    from paddle_cnn import engine
    from paddle_cnn.data import BatchLoader

    nets, prepare, original = [], engine.prepare_model, BatchLoader.__iter__

    def keep_net(cfg, net, *args):
        nets.append(net)
        return prepare(cfg, net, *args)

    def poisoned(self):
        for i, item in enumerate(original(self)):
            if self.shuffle and self.epoch == epoch and i == batch:
                for param in nets[-1].parameters():
                    param.set_value(paddle.full_like(param, float("nan")))
            yield item

    monkeypatch.setattr(engine, "prepare_model", keep_net)
    monkeypatch.setattr(BatchLoader, "__iter__", poisoned)


def test_nan_loss_stops_training_and_keeps_the_last_good_epoch(write_config, tmp_path, capsys, monkeypatch):
    _poison(monkeypatch, epoch=1, batch=3)
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "train", str(write_config(train={"epochs": 3})), "--output-dir", str(out))
    assert_refused(code, err, "loss became nan at epoch 2, step 4", "epoch 1", "--resume")
    state = paddle.load(str(out / "checkpoints" / "last.pdckpt"))
    assert state["meta"]["epoch"] == 1 and [r["epoch"] for r in rows(out)] == [1]
    failed = results(out)
    assert failed["status"] == "failed" and failed["epochs_completed"] == 1 and "epoch 2, step 4" in failed["reason"]
    # The refusal to reuse the directory says what it holds.
    code, _, err = run_main(capsys, "train", str(write_config()), "--output-dir", str(out))
    assert_refused(code, err, "failed", "--resume")
    # Once the cause is gone, the failed run resumes from its last good epoch.
    monkeypatch.undo()
    code, _, err = run_main(capsys, "train", "--resume", str(out))
    assert code == 0, err
    assert [r["epoch"] for r in rows(out)] == [1, 2, 3] and results(out)["status"] == "finished"


def test_divergence_in_the_first_epoch_says_there_is_no_checkpoint(write_config, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "train", str(write_config()), "--output-dir", str(out), "-o", "optimizer.lr=1e8")
    assert_refused(code, err, "at epoch 1, step", "no epoch completed", "optimizer.lr")
    assert "epoch 0" not in err
    assert results(out)["status"] == "failed" and not (out / "checkpoints" / "last.pdckpt").exists()


def test_non_finite_preprocessed_data_is_refused_before_training(write_config, tmp_path, capsys):
    """A normalisation that overflows float32 (here a std of 1e-40) would train into NaN."""
    config = write_config(data={"std": [1.0e-40]})
    code, _, err = run_main(capsys, "train", str(config), "--output-dir", str(tmp_path / "run"))
    assert_refused(code, err, "non-finite values", "data.std")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- interruption and resume


@pytest.fixture(scope="module")
def long_config(tmp_path_factory, data_root) -> Path:
    """30 tiny epochs: a few seconds, long enough to be interrupted."""
    tmp = tmp_path_factory.mktemp("long")
    return write_yaml(tmp / "long.yaml", tiny_config(data_root, **GRADUAL, train={"epochs": 30}))


@pytest.fixture(scope="module")
def reference_run(long_config) -> Path:
    """The same config trained without interruption, in a subprocess like the interrupted ones."""
    out = long_config.parent / "reference"
    proc = run_cli("train", str(long_config), "--output-dir", str(out), env=ENV, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return out


def start_training(config: Path, out: Path) -> subprocess.Popen:
    """Start `paddle-cnn train` in the background, output to files (a full pipe would stall it)."""
    log = open(out.parent / f"{out.name}.log", "w")
    return popen([sys.executable, "-m", "paddle_cnn", "train", str(config), "--output-dir", str(out)],
                 stdout=log, stderr=subprocess.STDOUT, text=True, env={**os.environ, **ENV})


def wait_for_epochs(proc: subprocess.Popen, run_dir: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= n):
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_resumes_to_exactly_the_uninterrupted_result(long_config, reference_run, tmp_path, signum):
    out = tmp_path / "run"
    proc = start_training(long_config, out)
    wait_for_epochs(proc, out, 1)
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == 130
    log = (tmp_path / "run.log").read_text()
    assert_refused(130, log, "interrupted", f"resume with: paddle-cnn train --resume {out}", exit_code=130)
    # metrics.jsonl is written just before the checkpoint: the signal may land between the two.
    last = out / "checkpoints" / "last.pdckpt"
    done = paddle.load(str(last))["meta"]["epoch"] if last.is_file() else 0
    assert done < 30 and not (out / "results.json").exists()

    proc = run_cli("train", "--resume", str(out), env=ENV, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(out, reference_run)
    first, resumed = json.loads((out / "env.json").read_text())["sessions"]  # the first start's record is kept
    assert first["resumed"] is False and resumed["resumed"] is True and resumed["start_epoch"] == done
    train_log = (out / "train.log").read_text()  # both starts, the interruption between them, the end
    # Not "epoch 1/30: train loss": the signal may land after epoch 1's checkpoint, before its line.
    marks = ["start, train.epochs 30: ", " interrupted", f" resume after epoch {done}, ",
             "epoch 30/30: train loss", " finished: test accuracy"]
    found = [train_log.find(m) for m in marks]
    assert -1 not in found and found == sorted(found), train_log
    # The rewritten VisualDL log still has the sample images and hyperparameters of the first start.
    tags = LogReader(file_path=str(next((out / "vdl" / "train").glob("vdlrecords*")))).get_tags()
    assert len(tags.get("image", [])) == 8 and tags.get("hyper_parameters")


def test_kill_9_leaves_a_loadable_checkpoint_and_resumes_exactly(long_config, reference_run, tmp_path):
    out = tmp_path / "run"
    proc = start_training(long_config, out)
    wait_for_epochs(proc, out, 1)
    delay = random.uniform(0.0, 0.5)
    time.sleep(delay)
    assert proc.poll() is None, f"finished within {delay:.2f} s; nothing was killed"
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert (out / ".lock").is_file()  # the killed run's lock file stays behind, but not its lock
    state = paddle.load(str(out / "checkpoints" / "last.pdckpt"))
    assert state["meta"]["epoch"] >= 1 and len(state["meta"]["rows"]) == state["meta"]["epoch"], delay
    # A temporary file a kill can leave behind is cleaned up by the resume.
    (out / "checkpoints" / ".last.pdckpt.tmp-999999").write_bytes(b"torn")

    proc = run_cli("train", "--resume", str(out), env=ENV, timeout=180)
    assert proc.returncode == 0, (delay, proc.stderr)
    assert_same_run(out, reference_run)
    assert not no_temp_files(out)


# ----------------------------------------------------------------------------- resume options


def test_resume_before_the_first_checkpoint_starts_over_exactly(finished_run, write_config, tmp_path, capsys):
    """Interrupted before epoch 1 was committed: --resume redoes the run as it would have been,
    fine-tuning start (model.init_from) included."""
    config = write_config(train={"epochs": 1}, model={"init_from": str(finished_run[0])})
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    for out in (fresh, resumed):
        code, _, err = run_main(capsys, "train", str(config), "--output-dir", str(out))
        assert code == 0, err
    (resumed / "results.json").unlink()
    (resumed / "checkpoints" / "last.pdckpt").unlink()
    code, _, err = run_main(capsys, "train", "--resume", str(resumed))
    assert code == 0, err
    assert rows(resumed) == rows(fresh) and results(resumed)["test_loss"] == results(fresh)["test_loss"]


@pytest.mark.parametrize("override, words", [
    ("model.num_classes=12", ["may not change model.*", "new run"]),
    ("data.train_size=100", ["may not change data.*", "new run"]),
    ("optimizer.lr=-1", ["optimizer.lr", "greater than 0"]),
], ids=["model", "data", "invalid"])
def test_resume_refuses_overrides_that_change_model_or_data(run_copy, capsys, override, words):
    (run_copy / "results.json").unlink()
    before = snapshot(run_copy)
    code, _, err = run_main(capsys, "train", "--resume", str(run_copy), "-o", override)
    assert_refused(code, err, *words)
    assert snapshot(run_copy) == before


def test_resuming_a_finished_run_without_more_epochs_is_refused(run_copy, capsys):
    before = snapshot(run_copy)
    code, _, err = run_main(capsys, "train", "--resume", str(run_copy))
    assert_refused(code, err, "already finished", "2 epochs", "-o train.epochs=")
    assert snapshot(run_copy) == before


def test_resume_refuses_fewer_epochs_than_completed(run_copy, capsys):
    (run_copy / "results.json").unlink()
    before = snapshot(run_copy)
    code, _, err = run_main(capsys, "train", "--resume", str(run_copy), "-o", "train.epochs=1")
    assert_refused(code, err, "train.epochs = 1", "2 epochs")
    assert snapshot(run_copy) == before


def test_a_finished_run_extended_equals_a_longer_run(run_copy, finished_run, tmp_path, capsys):
    code, _, err = run_main(capsys, "train", "--resume", str(run_copy), "-o", "train.epochs=3")
    assert code == 0, err
    longer = tmp_path / "longer"
    code, _, err = run_main(capsys, "train", str(finished_run[1]), "--output-dir", str(longer), "-o", "train.epochs=3")
    assert code == 0, err
    assert rows(run_copy) == rows(longer) and [r["epoch"] for r in rows(run_copy)] == [1, 2, 3]
    assert results(run_copy)["epochs_completed"] == 3
    assert yaml.safe_load((run_copy / "config.yaml").read_text())["train"]["epochs"] == 3


# ----------------------------------------------------------------------------- reproducibility, environment


def test_same_config_and_seed_give_bit_identical_metrics(finished_run, tmp_path, capsys):
    again = tmp_path / "again"
    assert run_main(capsys, "train", str(finished_run[1]), "--output-dir", str(again))[0] == 0
    assert rows(again) == rows(finished_run[0])
    other_seed = tmp_path / "seed1"
    code = run_main(capsys, "train", str(finished_run[1]), "--output-dir", str(other_seed), "-o", "train.seed=1")[0]
    assert code == 0
    assert rows(other_seed) != rows(finished_run[0])  # the comparison above can fail


def test_env_json_records_versions_device_threads_command_and_commit(finished_run):
    run_dir, config = finished_run
    (env,) = json.loads((run_dir / "env.json").read_text())["sessions"]
    assert env["python"] == platform.python_version()
    assert env["paddle"] == paddle.__version__ and env["numpy"] == np.__version__
    assert env["device"].startswith("cpu")
    assert int(env["omp_num_threads"]) >= 1 and env["runtime_decisions"]["threads"] >= 1
    assert env["command"] == ["paddle-cnn", "train", str(config), "--output-dir", str(run_dir)]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", env["git_commit"]), env["git_commit"]
    assert env["resumed"] is False
