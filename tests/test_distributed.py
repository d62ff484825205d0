"""Data-parallel training with `python -m paddle.distributed.launch` on 2 CPU processes (gloo).

The launched tests run the documented command for real (2 processes x 1 thread, tiny data, about
15 s each) and check: identical weights on both ranks (each rank logs a fingerprint of its
weights), a match with one process and the same global batch, one run directory written by rank 0
only, and Ctrl-C + --resume. The global batch of 45 splits 22/23, so every step has uneven shards.

Tolerance of the single-process match, derived: both runs do the same float32 arithmetic except
the order of the batch reduction (each rank sums its shard, the all-reduce adds the two halves).
A sum of B per-sample gradients rounded in two orders differs by at most 2 * gamma_B * sum|g_i|
per weight (Higham, eq. 3.5; see numerics.py), and sum|g_i| <= B * G with G a bound on one
sample's gradient entry (cross-entropy gradients of LeNet on this [0, 1]-scaled data stay below
G = 1). Momentum SGD moves a weight by at most lr / (1 - momentum) per unit of gradient
difference, over T steps, so the weights may differ by T * lr / (1 - momentum) * 2 * gamma_B * B * G
(first order: over so few small steps the difference is not amplified). With T = 24, lr = 0.01,
momentum 0.9, B = 45 that is 5.8e-4, whatever the CPU. A wrong split or weighting is far outside
it: plain DataParallel averaging of the 22/23 shards (without distributed.GlobalMeanLoss) differs
by 3e-3 after the same steps; the measured rounding difference is 5e-8.
LeNet has no BatchNorm: with BatchNorm each rank normalises over its own shard, which is not the
single-process computation, so no exact match is expected there (see distributed.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml

from paddle_cnn import fileio, runtime
from paddle_cnn.cli import main
from paddle_cnn.data import BatchLoader, Split, augment_batch
from paddle_cnn.distributed import running_statistics, weights_fingerprint
from paddle_cnn.errors import ConfigError

from conftest import popen
from numerics import gamma

# The derivation is in the module docstring; the config below must match its figures.
STEPS, LR, MOMENTUM, GLOBAL_BATCH, GRAD_BOUND = 24, 0.01, 0.9, 45, 1.0
TOLERANCE = STEPS * LR / (1 - MOMENTUM) * 2 * gamma(GLOBAL_BATCH) * GLOBAL_BATCH * GRAD_BOUND
PADDLE_CNN = Path(sys.executable).with_name("paddle-cnn")  # the console script of this environment
FINGERPRINT = re.compile(r"rank (\d)/2: weights fingerprint ([0-9a-f]{16})")


def _config(tmp: Path, data_root: Path, **train) -> Path:
    from conftest import tiny_config

    path = tmp / "dp.yaml"
    cfg = tiny_config(data_root, optimizer={"lr": LR, "momentum": MOMENTUM},
                      train={"batch_size": GLOBAL_BATCH, **train})
    path.write_text(yaml.safe_dump(cfg))
    return path


def _launch_cmd(log_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(log_dir),
            str(PADDLE_CNN), *args]


def _launch(log_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the launcher with 2 processes of `paddle-cnn ARGS`, 1 thread each."""
    proc = subprocess.run(_launch_cmd(log_dir, *args), capture_output=True, text=True, timeout=240, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, _logs(log_dir) + proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def _logs(log_dir: Path) -> str:
    logs = sorted(log_dir.glob("workerlog.*"))
    return "".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)


def _fingerprints(log_dir: Path) -> dict[int, list[str]]:
    """Per rank, the weights fingerprints it logged at each epoch end."""
    prints: dict[int, list[str]] = {}
    for rank in (0, 1):
        text = (log_dir / f"workerlog.{rank}").read_text(errors="replace")
        prints[rank] = [fp for r, fp in FINGERPRINT.findall(text) if int(r) == rank]
    return prints


def _weights(run_dir: Path) -> dict:
    return paddle.load(str(run_dir / "checkpoints" / "last.pdckpt"))["model"]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_weights_match(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[name]), rtol=0, atol=TOLERANCE, err_msg=name)


@pytest.fixture(scope="module")
def launched(tmp_path_factory, data_root):
    """A 2-process run and the same config in one process (2 epochs of 12 global batches)."""
    tmp = tmp_path_factory.mktemp("dp")
    config = _config(tmp, data_root)
    _launch(tmp / "log", "train", str(config), "--output-dir", str(tmp / "run"), cwd=tmp)
    single = tmp_path_factory.mktemp("single") / "run"
    assert main(["train", str(config), "--output-dir", str(single)]) == 0
    return tmp, single


def test_both_ranks_hold_identical_weights_and_rank0_saved_them(launched):
    tmp, _ = launched
    prints = _fingerprints(tmp / "log")
    assert len(prints[0]) == 2 and prints[0] == prints[1]
    assert weights_fingerprint(_weights(tmp / "run")).startswith(prints[0][-1])


def test_matches_one_process_with_the_same_global_batch(launched):
    tmp, single = launched
    _assert_weights_match(_weights(tmp / "run"), _weights(single))
    for dp, sp in zip(_rows(tmp / "run"), _rows(single), strict=True):
        assert dp["train_acc"] == sp["train_acc"] and dp["dev_acc"] == sp["dev_acc"]
        assert dp["train_loss"] == pytest.approx(sp["train_loss"], rel=1e-5)
        assert dp["dev_loss"] == pytest.approx(sp["dev_loss"], rel=1e-4, abs=1e-7)


def test_metrics_cover_whole_splits_like_one_process(launched):
    tmp, single = launched
    dp, sp = (json.loads((d / "results.json").read_text()) for d in (tmp / "run", single))
    assert dp["test_samples"] == sp["test_samples"] == 100 and dp["dev_samples"] == 100
    assert dp["test_acc"] == sp["test_acc"]
    assert dp["test_loss"] == pytest.approx(sp["test_loss"], rel=1e-4, abs=1e-7)
    # The evaluate command, in one process, reproduces what the 2 processes recorded for the same checkpoint.
    assert main(["evaluate", str(tmp / "run")]) == 0
    again = json.loads((tmp / "run" / "results.json").read_text())["evaluations"]["test"]
    assert again["samples"] == 100 and again["acc"] == dp["test_acc"]
    assert again["loss"] == pytest.approx(dp["test_loss"], rel=1e-5, abs=1e-7)


def test_only_rank0_wrote_one_run_directory(launched):
    tmp, _ = launched
    assert sorted(p.name for p in tmp.iterdir()) == ["dp.yaml", "log", "run"]
    for split in ("train", "dev"):  # a second writer would have added its own record file
        assert len(list((tmp / "run" / "vdl" / split).glob("vdlrecords*"))) == 1
    assert not [p for p in (tmp / "run").rglob("*") if fileio.TEMP_MARK in p.name]
    env = json.loads((tmp / "run" / "env.json").read_text())["sessions"][-1]
    assert (tmp / "run" / "train.log").read_text().count("epoch 2/2: train loss") == 1  # one writer appended
    assert env["omp_num_threads"] == "1" and env["world_size"] == 2
    assert "rank 1/2" in (tmp / "log" / "workerlog.1").read_text()  # every rank logs to the launcher's log dir


def test_soft_targets_train_like_one_process(tmp_path, data_root):
    """Mixup/cutmix, erasing and smoothing: every rank mixes the same global batch, GlobalMeanLoss takes the
    soft targets; the tolerance derivation holds (|softmax - target| <= 1 per logit, as with int labels)."""
    config = _config(tmp_path, data_root, epochs=1)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["augment"] = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "random_erasing": {"prob": 0.5}}
    cfg["loss"] = {"label_smoothing": 0.1}
    config.write_text(yaml.safe_dump(cfg))
    _launch(tmp_path / "log", "train", str(config), "--output-dir", str(tmp_path / "run"), cwd=tmp_path)
    single = tmp_path / "single"
    assert main(["train", str(config), "--output-dir", str(single)]) == 0
    _assert_weights_match(_weights(tmp_path / "run"), _weights(single))
    dp, sp = _rows(tmp_path / "run")[0], _rows(single)[0]
    assert dp["train_acc"] == sp["train_acc"] and dp["train_loss"] == pytest.approx(sp["train_loss"], rel=1e-5)


def test_ctrl_c_keeps_the_last_epoch_and_resume_continues_it(tmp_path, data_root):
    config = _config(tmp_path, data_root, epochs=300)
    run, log = tmp_path / "run", tmp_path / "log"
    launcher = popen(_launch_cmd(log, "train", str(config), "--output-dir", str(run)), cwd=tmp_path,
                     env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (run / "checkpoints" / "last.pdckpt").is_file() and time.monotonic() < deadline:
            assert launcher.poll() is None, _logs(log)
            time.sleep(0.2)
        launcher.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends to the launcher
        assert launcher.wait(timeout=60) != 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert "resume with: python -m paddle.distributed.launch" in (log / "workerlog.0").read_text()
    done = paddle.load(str(run / "checkpoints" / "last.pdckpt"))["meta"]["epoch"]
    assert done >= 1 and not (run / "results.json").exists()

    _launch(tmp_path / "log2", "train", "--resume", str(run), "-o", f"train.epochs={done + 1}", cwd=tmp_path)
    prints = _fingerprints(tmp_path / "log2")
    assert len(prints[0]) == 1 and prints[0] == prints[1]  # rank 1 loaded the checkpoint too
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished" and results["epochs_completed"] == done + 1
    assert [r["epoch"] for r in _rows(run)] == list(range(1, done + 2))
    single = tmp_path / "single"
    assert main(["train", str(config), "--output-dir", str(single), "-o", f"train.epochs={done + 1}"]) == 0
    _assert_weights_match(_weights(run), _weights(single))


def _split(n: int) -> Split:
    images = np.arange(n * 2 * 4 * 4, dtype="float32").reshape(n, 2, 4, 4)
    return Split(images, np.arange(n, dtype="int64"))


@pytest.mark.parametrize("n,batch,world", [(100, 45, 2), (100, 32, 3), (7, 7, 2)])
def test_rank_slices_of_each_global_batch_make_the_single_process_batch(n, batch, world):
    split = _split(n)
    one = BatchLoader(split, batch, shuffle=True, seed=3, crop_padding=1, horizontal_flip=True)
    ranks = [BatchLoader(split, batch, shuffle=True, seed=3, crop_padding=1, horizontal_flip=True, rank=r, world=world)
             for r in range(world)]
    for loader in (one, *ranks):
        loader.set_epoch(2)
    assert all(len(r) == len(one) for r in ranks)
    for whole, *parts in zip(one, *ranks, strict=True):
        sizes = [len(p[1]) for p in parts]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[1])
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[0])  # same augmentation


def test_augmentation_really_ran_in_the_sharded_loader():
    """Guards the test above: with augmentation, the batches differ from the raw images."""
    split = _split(20)
    loader = BatchLoader(split, 20, shuffle=False, crop_padding=1, horizontal_flip=True, rank=1, world=2)
    images, labels = next(iter(loader))
    assert not np.array_equal(images, split.images[labels[:, 0]])
    assert augment_batch(split.images[:2], np.random.default_rng(0), 1, True).shape == (2, 2, 4, 4)


@pytest.mark.parametrize("n,batch", [(100, 1), (91, 45)])
def test_a_rank_without_samples_is_a_config_error(n, batch):
    with pytest.raises(ConfigError, match="train.batch_size"):
        BatchLoader(_split(n), batch, shuffle=True, rank=0, world=2)


def test_ranks_other_than_0_write_no_files(tmp_path, monkeypatch):
    from paddle_cnn.vdl import VdlLogger

    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    fileio.write_json(tmp_path / "results.json", {"a": 1})
    fileio.paddle_save({"w": paddle.ones([2])}, tmp_path / "checkpoints" / "last.pdckpt")
    vdl = VdlLogger(tmp_path / "run")
    vdl.epoch({"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "dev_loss": 1.0, "dev_acc": 0.5, "lr": 0.1,
               "images_per_s": 10.0})
    vdl.close()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("PADDLE_TRAINER_ID", "0")
    fileio.write_json(tmp_path / "results.json", {"a": 1})
    assert (tmp_path / "results.json").is_file()


def test_launched_processes_share_the_cores():
    env = {"PADDLE_TRAINER_ID": "1", "PADDLE_TRAINERS_NUM": "4", "PADDLE_LOCAL_SIZE": "2"}
    decisions = runtime.setup(environ=env)
    assert runtime.rank(env) == 1 and runtime.world_size(env) == 4
    assert env["OMP_NUM_THREADS"] == str(max(1, runtime.available_cores() // 2))
    assert decisions["threads_source"] == "available cores / 2 local processes"


def test_batchnorm_statistics_are_averaged_but_frozen_weights_are_not():
    """BatchNorm's running mean/variance are what DataParallel leaves per-rank; they must be the synced set."""
    net = paddle.nn.Sequential(paddle.nn.Conv2D(1, 2, 3), paddle.nn.BatchNorm2D(2))
    net[0].weight.stop_gradient = True  # what model.freeze does
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[id(t)] for t in running_statistics(net)) == ["1._mean", "1._variance"]
