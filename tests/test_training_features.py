"""Early stopping, the plateau schedule and gradient clipping: what they do, and that a resume keeps them exact.

The runs are in-process on the tiny MNIST of conftest with test_reliability's slow-learning settings
(GRADUAL: 200 training images, lr 0.002, 4 steps per epoch), where dev accuracy reaches 100% after
a few epochs and then cannot improve: that plateau is what early stopping and `plateau` react to.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest
from test_reliability import (
    GRADUAL,
    assert_refused,
    assert_same_run,
    results,
    rows,
    run_main,
    snapshot,
    vdl_scalars,
    write_yaml,
)

from paddle_cnn.callbacks import EarlyStopState, restore_early_stop
from paddle_cnn.cli import main
from paddle_cnn.config import OPTIMIZERS, build_config
from paddle_cnn.data import BatchLoader
from paddle_cnn.optim import build_optimizer

from conftest import tiny_config

PATIENCE = 3
EARLY = {"epochs": 30, "early_stopping": {"monitor": "dev_acc", "patience": PATIENCE}}
PLATEAU = {"name": "plateau", "monitor": "dev_acc", "factor": 0.5, "patience": 1, "cooldown": 1}


def _train_quietly(config: Path, out: Path) -> str:
    """Train in-process (a module fixture cannot use capsys); returns what was printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", str(config), "--output-dir", str(out)]) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def early_run(tmp_path_factory, data_root):
    """An uninterrupted run with early stopping: (run dir, config, printed output)."""
    tmp = tmp_path_factory.mktemp("early")
    config = write_yaml(tmp / "early.yaml", tiny_config(data_root, **{**GRADUAL, "train": EARLY}))
    return tmp / "run", config, _train_quietly(config, tmp / "run")


@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory, data_root):
    """An uninterrupted 12-epoch run with the plateau schedule: (run dir, config)."""
    tmp = tmp_path_factory.mktemp("plateau")
    config = write_yaml(tmp / "plateau.yaml", tiny_config(data_root, **GRADUAL, train={"epochs": 12},
                                                          schedule=PLATEAU))
    _train_quietly(config, tmp / "run")
    return tmp / "run", config


def _interrupt(monkeypatch, epoch: int) -> None:
    """Ctrl-C in the middle of training epoch `epoch` (0-based), after its first batch."""
    original = BatchLoader.__iter__

    def interrupted(self):
        for i, item in enumerate(original(self)):
            if self.shuffle and self.epoch == epoch and i == 1:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(BatchLoader, "__iter__", interrupted)


def _interrupted_then_resumed(monkeypatch, capsys, config: Path, out: Path, epoch: int) -> dict:
    """Train, interrupt during epoch `epoch`, resume; returns the checkpoint the resume started from."""
    _interrupt(monkeypatch, epoch)
    code, _, err = run_main(capsys, "train", str(config), "--output-dir", str(out))
    assert code == 130, err
    state = paddle.load(str(out / "checkpoints" / "last.pdckpt"))
    assert state["meta"]["epoch"] == epoch and not (out / "results.json").exists()
    monkeypatch.undo()
    return state


def _stop_epoch(values: list[float], patience: int) -> int | None:
    """Independently of the code: the first epoch after `patience` epochs that did not beat the best so far."""
    best, bad = -np.inf, 0
    for epoch, value in enumerate(values, 1):
        best, bad = (value, 0) if value > best else (best, bad + 1)
        if bad >= patience:
            return epoch
    return None


# ----------------------------------------------------------------------------- early stopping


def test_early_stopping_stops_and_results_say_so(early_run):
    run, _, printed = early_run
    got, history = results(run), rows(run)
    stop = _stop_epoch([r["dev_acc"] for r in history], PATIENCE)
    assert stop is not None and stop < 30
    assert got["status"] == "finished" and got["stopped_early"] is True
    assert got["stopped_epoch"] == got["epochs_completed"] == len(history) == stop
    assert "dev_acc has not improved" in got["stop_reason"] and "patience 3" in got["stop_reason"]
    assert f"stopped early after epoch {stop}/30: dev_acc has not improved" in printed
    meta = paddle.load(str(run / "checkpoints" / "last.pdckpt"))["meta"]["early_stop"]
    assert meta["stopped_epoch"] == stop and meta["bad_epochs"] == PATIENCE and meta["best"] == max(
        r["dev_acc"] for r in history)


def test_a_run_without_early_stopping_records_that_it_did_not_stop(early_run, tmp_path, capsys):
    out = tmp_path / "off"
    code, _, err = run_main(capsys, "train", str(early_run[1]), "--output-dir", str(out), "-o", "train.epochs=4",
                            "-o", "train.early_stopping.patience=null")
    assert code == 0, err
    got = results(out)
    assert (got["stopped_early"], got["stopped_epoch"], got["stop_reason"], got["epochs_completed"]) == (
        False, None, None, 4)


@pytest.mark.parametrize("old_checkpoint", [False, True], ids=["state-in-checkpoint", "checkpoint-without-state"])
def test_resume_in_the_middle_of_the_patience_window_equals_the_uninterrupted_run(
        early_run, tmp_path, capsys, monkeypatch, old_checkpoint):
    reference, config, _ = early_run
    stop = results(reference)["stopped_epoch"]
    out = tmp_path / "run"
    state = _interrupted_then_resumed(monkeypatch, capsys, config, out, epoch=stop - 1)
    assert 0 < state["meta"]["early_stop"]["bad_epochs"] < PATIENCE  # really mid-window
    if old_checkpoint:  # as written before early stopping existed: the state is rebuilt from the metrics
        del state["meta"]["early_stop"]
        paddle.save(state, str(out / "checkpoints" / "last.pdckpt"))
    code, _, err = run_main(capsys, "train", "--resume", str(out))
    assert code == 0, err
    assert_same_run(out, reference)
    for key in ("stopped_early", "stopped_epoch", "stop_reason"):
        assert results(out)[key] == results(reference)[key], key


def test_resume_of_an_early_stopped_run_is_refused_as_it_is(early_run, tmp_path, capsys):
    run = Path(shutil.copytree(early_run[0], tmp_path / "run"))
    stop = results(run)["stopped_epoch"]
    before = snapshot(run)
    code, _, err = run_main(capsys, "train", "--resume", str(run))
    assert_refused(code, err, f"stopped early after epoch {stop} of 30", "would stop again",
                   "-o train.early_stopping.patience=8", "-o train.epochs=40", "patience=null")
    assert snapshot(run) == before
    # Lowering the patience does not count as raising it either.
    code, _, err = run_main(capsys, "train", "--resume", str(run), "-o", "train.early_stopping.patience=2")
    assert_refused(code, err, "stopped early")


@pytest.mark.parametrize("override, more", [
    ("train.early_stopping.patience=4", 1),  # the count so far (3) is kept: one more epoch without a gain
    ("train.epochs=31", PATIENCE),  # a new patience window
], ids=["more-patience", "more-epochs"])
def test_an_early_stopped_run_trains_on_with_more_patience_or_epochs(early_run, tmp_path, capsys, override, more):
    reference = early_run[0]
    assert max(r["dev_acc"] for r in rows(reference)) == 1.0  # so no later epoch can improve on it
    run = Path(shutil.copytree(reference, tmp_path / "run"))
    stop = results(run)["stopped_epoch"]
    code, _, err = run_main(capsys, "train", "--resume", str(run), "-o", override)
    assert code == 0, err
    got = results(run)
    assert got["stopped_epoch"] == got["epochs_completed"] == stop + more and got["stopped_early"]
    assert rows(run)[:stop] == rows(reference)


def test_a_run_killed_after_it_stopped_early_resumes_straight_to_its_test(early_run, tmp_path, capsys):
    """The checkpoint that records the stop is written before results.json: a kill in between."""
    run = Path(shutil.copytree(early_run[0], tmp_path / "run"))
    (run / "results.json").unlink()
    code, out, err = run_main(capsys, "train", "--resume", str(run))
    assert code == 0, err
    assert "/30:" not in out  # no epoch line: nothing trained
    assert rows(run) == rows(early_run[0])
    for key in ("test_loss", "epochs_completed", "stopped_epoch", "stop_reason"):
        assert results(run)[key] == results(early_run[0])[key], key


def test_a_resume_that_changes_the_monitor_or_min_delta_recounts_from_the_metrics():
    history = [{"epoch": e, "dev_acc": a, "dev_loss": loss}
               for e, a, loss in ((1, 0.5, 2.0), (2, 0.7, 1.0), (3, 0.7, 0.5), (4, 0.6, 0.4))]
    saved = EarlyStopState("dev_acc", 0.0, best=0.7, best_epoch=2, bad_epochs=2)
    same = restore_early_stop(saved, build_config({"train": {"early_stopping": {"patience": 5}}}), history)
    assert (same.best, same.bad_epochs) == (0.7, 2)
    by_loss = restore_early_stop(EarlyStopState(**vars(saved)), build_config(
        {"train": {"early_stopping": {"monitor": "dev_loss", "patience": 5}}}), history)
    assert (by_loss.monitor, by_loss.best, by_loss.best_epoch, by_loss.bad_epochs) == ("dev_loss", 0.4, 4, 0)
    coarser = restore_early_stop(EarlyStopState(**vars(saved)), build_config(
        {"train": {"early_stopping": {"min_delta": 0.15}}}), history)
    assert (coarser.best, coarser.best_epoch, coarser.bad_epochs) == (0.7, 2, 2)
    coarsest = restore_early_stop(EarlyStopState(**vars(saved)), build_config(
        {"train": {"early_stopping": {"min_delta": 0.25}}}), history)
    assert (coarsest.best, coarsest.best_epoch, coarsest.bad_epochs) == (0.5, 1, 3)


# ----------------------------------------------------------------------------- plateau


def _plateau_lrs(values: list[float], lr: float, factor: float, patience: int, cooldown: int) -> list[float]:
    """The learning rate of each epoch by the rule documented for schedule.plateau (mode max, 1e-4 relative)."""
    best, bad, rest, out = None, 0, 0, []
    for value in values:
        out.append(lr)
        if rest:
            rest -= 1
            continue
        best, bad = (value, 0) if best is None or value > best * (1 + 1e-4) else (best, bad + 1)
        if bad > patience:
            rest, bad, lr = cooldown, 0, lr * factor
    return out


def test_plateau_lowers_the_lr_once_per_epoch_on_the_dev_metric(plateau_run):
    history = rows(plateau_run[0])
    lrs = [r["lr"] for r in history]
    assert lrs == _plateau_lrs([r["dev_acc"] for r in history], 0.002, 0.5, 1, 1)
    assert len(set(lrs)) >= 3 and lrs[0] == 0.002  # it did act, more than once
    assert [v for _, v in vdl_scalars(plateau_run[0], "train", "epoch/lr")] == pytest.approx(lrs)


def test_resume_in_the_middle_of_a_plateau_schedule_equals_the_uninterrupted_run(
        plateau_run, tmp_path, capsys, monkeypatch):
    reference, config = plateau_run
    lrs = [r["lr"] for r in rows(reference)]
    first_cut = next(e for e in range(1, len(lrs)) if lrs[e] < lrs[e - 1])  # epochs done when lr first fell
    out = tmp_path / "run"
    state = _interrupted_then_resumed(monkeypatch, capsys, config, out, epoch=first_cut)
    sched = state["optimizer"]["LR_Scheduler"]
    assert sched["cooldown_counter"] == 1 and sched["last_lr"] == lrs[first_cut]  # resting, lowered
    code, _, err = run_main(capsys, "train", "--resume", str(out))
    assert code == 0, err
    assert_same_run(out, reference)  # includes every epoch's lr


# ----------------------------------------------------------------------------- gradient clipping


def _sgd_step_size(clip: float | None) -> tuple[float, float]:
    """One plain-SGD step of a small net on a large loss: (norm of the weight change, of the gradient)."""
    cfg = build_config({"optimizer": {"name": "sgd", "lr": 0.1, "grad_clip_norm": clip}})
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Linear(8, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 4))
    opt = build_optimizer(cfg, net.parameters(), steps_per_epoch=1)
    before = [p.numpy().copy() for p in net.parameters()]
    loss = (net(paddle.full([32, 8], 3.0)) ** 2).mean() * 100
    loss.backward()
    grad = np.sqrt(sum(float((p.grad.numpy().astype(np.float64) ** 2).sum()) for p in net.parameters()))
    opt.step()
    moved = np.sqrt(sum(((p.numpy() - b).astype(np.float64) ** 2).sum() for p, b in zip(net.parameters(), before)))
    return float(moved), grad


def test_grad_clip_norm_limits_the_global_gradient_norm():
    moved, grad = _sgd_step_size(0.01)
    assert grad > 1.0  # far above the clip norm, so clipping must act
    assert moved == pytest.approx(0.1 * 0.01, rel=1e-4)  # lr * clip_norm: the gradient rescaled to norm 0.01
    unclipped, _ = _sgd_step_size(None)
    assert unclipped == pytest.approx(0.1 * grad, rel=1e-4)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_gets_the_clip(name):
    cfg = build_config({"optimizer": {"name": name, "grad_clip_norm": 2.5}})
    opt = build_optimizer(cfg, paddle.nn.Linear(2, 2).parameters(), steps_per_epoch=1)
    # Adam-like updates are nearly invariant to a gradient's scale, so the clip is checked where it is held.
    assert isinstance(opt._grad_clip, paddle.nn.ClipGradByGlobalNorm) and opt._grad_clip.clip_norm == 2.5
    assert build_optimizer(build_config({"optimizer": {"name": name}}), paddle.nn.Linear(2, 2).parameters(),
                           1)._grad_clip is None


# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("override, words", [
    ("train.early_stopping.patience=0", ["train.early_stopping.patience", "below the minimum 1"]),
    ("train.early_stopping.patience=two", ["train.early_stopping.patience", "expected an integer", "'two'"]),
    ("train.early_stopping.patiense=3", ["unknown key 'train.early_stopping.patiense'", "did you mean 'patience'"]),
    ("train.early_stopping.monitor=val_loss", ["train.early_stopping.monitor", "'dev_acc', 'dev_loss'"]),
    ("train.early_stopping.min_delta=-0.1", ["train.early_stopping.min_delta", "below the minimum 0.0"]),
    ("schedule.name=plateu", ["schedule.name", "'plateau'"]),
    ("schedule.factor=1.0", ["schedule.factor", "must be less than 1.0"]),
    ("schedule.factor=0", ["schedule.factor", "greater than 0"]),
    ("schedule.patience=-1", ["schedule.patience", "below the minimum 0"]),
    ("schedule.cooldown=1.5", ["schedule.cooldown", "expected an integer"]),
    ("schedule.monitor=acc", ["schedule.monitor", "'dev_acc', 'dev_loss'"]),
    ("schedule={name: plateau, warmup_epochs: 1}", ["schedule.warmup_epochs = 1.0", "plateau", "warmup_epochs: 0"]),
    ("optimizer.grad_clip_norm=0", ["optimizer.grad_clip_norm", "greater than 0"]),
    ("optimizer.grad_clip_norm=big", ["optimizer.grad_clip_norm", "expected a number"]),
], ids=["es-patience-zero", "es-patience-type", "es-typo", "es-monitor", "es-min-delta", "schedule-typo",
        "factor-one", "factor-zero", "plateau-patience", "cooldown-type", "plateau-monitor", "plateau-warmup",
        "clip-zero", "clip-type"])
def test_bad_settings_are_refused_before_anything_trains(write_config, tmp_path, capsys, override, words):
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "train", str(write_config()), "--output-dir", str(out), "-o", override)
    assert_refused(code, err, *words)
    assert not out.exists()



def test_runs_lists_a_real_early_stopped_run_as_early_stopped(early_run):
    """`paddle-cnn runs` reads the engine's own results.json fields, not a guessed format."""
    from paddle_cnn.runs import describe_run

    run, _, _ = early_run
    entry = describe_run(run, run.parent)
    assert entry["status"] == "early-stopped", entry
    assert "patience 3" in entry["reason"]
