"""hapi callbacks of a training run: true mean losses, per-epoch records and checkpoints, gradient norms.

hapi quirks handled here:
- fit/evaluate report the last batch's loss: LossMeter accumulates the size-weighted mean.
- fit always starts at epoch 0 and has no resume: RunRecorder offsets epochs by the restored
  Progress, and its checkpoint holds weights, optimizer and scheduler state, epoch, global step
  and best metric.
- ModelCheckpoint keeps no best model: RunRecorder saves best.pdparams on dev accuracy.
- EarlyStopping watches the last batch's loss and forgets its count on every fit() (a resume is a
  new fit()): RunRecorder decides early stopping itself (EarlyStopState, saved in the checkpoint)
  and sets hapi's model.stop_training, which fit checks after each epoch's evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle

from . import compat, distributed, fileio, rundir
from .checkpoint import save_best, save_checkpoint
from .config import Config
from .data import BatchLoader
from .optim import step_plateau
from .vdl import VdlLogger


class NonFiniteLoss(Exception):
    """Training produced a NaN or infinite loss."""


@dataclass
class EarlyStopState:
    """What early stopping remembers (train.early_stopping): the monitored best, epochs since, the stop.

    Kept whether or not early stopping is on, so that turning it on at a resume knows the history.
    """

    monitor: str = "dev_acc"
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the monitored metric last improved by more than min_delta
    stopped_epoch: int = 0  # 0: not stopped
    stop_reason: str | None = None
    planned_epochs: int = 0  # train.epochs when it stopped: raising it on resume opens a new patience window

    def observe(self, row: dict) -> None:
        """Count one epoch's metrics row (dev_acc higher is better, dev_loss lower)."""
        value = row[self.monitor]
        gain = (value - self.best) * (1 if self.monitor == "dev_acc" else -1) if self.best is not None else math.inf
        if gain > self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, row["epoch"], 0
        else:
            self.bad_epochs += 1


def restore_early_stop(saved: EarlyStopState | None, cfg: Config, rows: list) -> EarlyStopState:
    """Early stopping's state for this start of a run, under its (possibly changed) config.

    Args:
        saved: the checkpoint's state (None for a new run, or a checkpoint from before early stopping existed).
        cfg: the run's config.
        rows: the metrics rows so far.
    Returns:
        The state; a stop is lifted when patience or train.epochs were raised (or patience is null).
        A missing state, or one for another monitor or min_delta, is rebuilt from the rows.
    """
    es = cfg.train.early_stopping
    state = saved or EarlyStopState(monitor="")
    if (state.monitor, state.min_delta) != (es.monitor, es.min_delta):
        rebuilt = EarlyStopState(es.monitor, es.min_delta, stopped_epoch=state.stopped_epoch,
                                 stop_reason=state.stop_reason, planned_epochs=state.planned_epochs)
        for row in rows:
            rebuilt.observe(row)
        state = rebuilt
    raised_epochs = cfg.train.epochs > state.planned_epochs
    if state.stopped_epoch and (es.patience is None or raised_epochs or es.patience > state.bad_epochs):
        state.bad_epochs = 0 if raised_epochs else state.bad_epochs
        state.stopped_epoch, state.stop_reason, state.planned_epochs = 0, None, 0
    return state


@dataclass
class Progress:
    """Where training stands; what a checkpoint must restore."""

    epoch: int = 0  # completed epochs
    global_step: int = 0
    best_acc: float = -1.0
    best_epoch: int = 0
    rows: list = field(default_factory=list)
    early_stop: EarlyStopState | None = None  # None until RunRecorder reconciles it with the config


class LossMeter(paddle.callbacks.Callback):
    """Size-weighted mean of the per-batch losses hapi reports (it only keeps the last one)."""

    def __init__(self):
        super().__init__()
        self.reset()

    def reset(self) -> None:
        """Forget what was accumulated."""
        self.total, self.count = 0.0, 0

    def add(self, logs: dict, count: int | None = None) -> float:
        """Accumulate one batch from hapi's logs; returns that batch's loss.

        Args:
            logs: hapi batch logs with 'loss' and 'batch_size'.
            count: samples the loss is the mean of (default logs['batch_size'], which is wrong when
                data-parallel: see distributed.batch_samples).
        Returns:
            The batch loss.
        """
        count = logs["batch_size"] if count is None else count
        loss = float(logs["loss"][0])
        self.total += loss * count
        self.count += count
        return loss

    @property
    def mean(self) -> float:
        return self.total / max(1, self.count)

    def on_eval_begin(self, logs=None):
        self.reset()

    def on_eval_batch_end(self, step, logs=None):
        self.add(logs, distributed.batch_samples(self.model, logs))


def probed_weights(net) -> list[tuple[str, paddle.Tensor]]:
    """The weights GradNormProbe logs, in the network's registration order (input side first).

    Args:
        net: a paddle.nn.Layer.
    Returns:
        (name, parameter) of every trainable conv kernel (4-D) and dense matrix (2-D); biases and
        BatchNorm scales (1-D) are left out.
    """
    return [(name, p) for name, p in net.named_parameters()
            if name.endswith("weight") and len(p.shape) >= 2 and not p.stop_gradient]


class GradNormProbe(paddle.callbacks.Callback):
    """Every `every` steps, the L2 norm of each conv/linear weight's gradient, to VisualDL (train.log_grad_norms).

    hapi's train_batch clears the gradients before any callback sees the batch, so a tensor hook
    on each weight reads its gradient as backward produces it; off logging steps the hooks return
    at once, so the cost is a Python call per weight per step.
    """

    def __init__(self, net, vdl: VdlLogger, progress: Progress, every: int):
        super().__init__()
        self.vdl, self.progress, self.every = vdl, progress, every
        self.norms, self.step = {}, 0
        self.handles = [p.register_hook(self._hook(name)) for name, p in probed_weights(net)]

    def _hook(self, name: str):
        def hook(grad):
            if self.step:
                # numpy's pairwise sum: accurate in float32 and ~3x faster than paddle.linalg.norm on CPU.
                self.norms[name] = float(np.linalg.norm(grad.numpy().ravel()))
        return hook

    def on_train_batch_begin(self, step, logs=None):
        # The step number this batch will get, independent of whether RunRecorder has counted it yet.
        upcoming = self.progress.global_step + 1
        self.step, self.norms = (upcoming if upcoming % self.every == 0 else 0), {}

    def on_train_batch_end(self, step, logs=None):
        if self.step and self.norms:
            self.vdl.grad_norms(self.step, self.norms)
        self.step = 0

    def on_train_end(self, logs=None):
        for handle in self.handles:
            handle.remove()


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunRecorder(paddle.callbacks.Callback):
    """Per-epoch bookkeeping: true mean losses, metrics.jsonl, VisualDL, best/last checkpoints, progress."""

    def __init__(self, run_dir: Path, cfg: Config, train_loader: BatchLoader, progress: Progress,
                 vdl: VdlLogger, log=print):
        super().__init__()
        self.run_dir, self.cfg, self.loader, self.progress, self.vdl, self.log = (
            run_dir, cfg, train_loader, progress, vdl, log)
        self.train_meter, self.dev_meter = LossMeter(), LossMeter()
        self.start_epoch = progress.epoch
        progress.early_stop = restore_early_stop(progress.early_stop, cfg, progress.rows)

    @property
    def stopped_early(self) -> bool:
        """The run has stopped early (in this fit, or before a resume that raised neither patience nor epochs)."""
        return bool(self.progress.early_stop.stopped_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = self.start_epoch + epoch  # hapi restarts at 0 on every fit() call
        self.loader.set_epoch(self.epoch)
        # Dropout etc. draw from paddle's global generator: re-seed it per epoch so a resumed run
        # draws exactly what an uninterrupted one would, without pickling generator state.
        # Data-parallel ranks get different streams (rank 0 the single-process one): dropout masks
        # of different shards should not be copies of each other.
        paddle.seed(self.cfg.train.seed * 100_003 + self.epoch + 1_000_003 * distributed.rank())
        self.train_meter.reset()
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, step, logs=None):
        loss = self.train_meter.add(logs, distributed.batch_samples(self.model, logs))
        self.progress.global_step += 1
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss} at epoch {self.epoch + 1}, step {step + 1} "
                                f"(global step {self.progress.global_step})")
        if self.progress.global_step % self.cfg.train.log_every == 0:
            self.vdl.step_loss(self.progress.global_step, loss)
            self._progress_line(step + 1, float(logs["acc"]))

    def _progress_line(self, step: int, acc: float) -> None:
        elapsed = time.perf_counter() - self.t0
        total = len(self.loader)
        rate = self.train_meter.count / max(elapsed, 1e-9)
        epochs_left = self.cfg.train.epochs - self.epoch - 1
        eta = elapsed / step * (total - step) + epochs_left * elapsed / step * total
        self.log(f"epoch {self.epoch + 1}/{self.cfg.train.epochs} step {step}/{total} "
                 f"loss {self.train_meter.mean:.4f} {self.loader.train_acc_name} {100 * acc:.2f}% {rate:,.0f} img/s "
                 f"ETA {_fmt_time(eta)}")

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds = time.perf_counter() - self.t0
        self.train_acc = float(logs["acc"])

    def on_eval_begin(self, logs=None):
        self.dev_meter.reset()

    def on_eval_batch_end(self, step, logs=None):
        self.dev_meter.add(logs, distributed.batch_samples(self.model, logs))

    def on_eval_end(self, logs=None):
        p = self.progress
        epoch_seconds = time.perf_counter() - self.t0
        row = {
            "epoch": self.epoch + 1, "train_loss": self.train_meter.mean, "train_acc": self.train_acc,
            "dev_loss": self.dev_meter.mean, "dev_acc": float(logs["acc"]),
            "lr": float(compat.optimizer_of(self.model).get_lr()),
            "epoch_seconds": epoch_seconds, "train_seconds": self.train_seconds,
            "images_per_s": self.train_meter.count / self.train_seconds,
            "elapsed_seconds": (p.rows[-1]["elapsed_seconds"] if p.rows else 0.0) + epoch_seconds,
            "global_step": p.global_step,
        }
        p.rows.append(row)
        p.epoch = self.epoch + 1
        # Order matters for crash safety: metrics and VisualDL first, the checkpoint (the commit
        # point) last; a resume trims whatever ran ahead of the checkpoint.
        fileio.write_jsonl(self.run_dir / rundir.METRICS, p.rows)
        self.vdl.epoch(row)
        if row["dev_acc"] > p.best_acc:
            p.best_acc, p.best_epoch = row["dev_acc"], row["epoch"]
            save_best(self.run_dir, self.model)
        # Both decisions change state the checkpoint must hold, so they come before it.
        lr_change = step_plateau(compat.optimizer_of(self.model), row)
        stop = self._early_stop(row)
        save_checkpoint(self.run_dir, self.model, progress_meta(p))
        self.log(f"epoch {row['epoch']}/{self.cfg.train.epochs}: train loss {row['train_loss']:.4f} "
                 f"{self.loader.train_acc_name} {100 * row['train_acc']:.2f}% "
                 f"| dev loss {row['dev_loss']:.4f} acc {100 * row['dev_acc']:.2f}% "
                 f"| lr {row['lr']:.3g} | {row['images_per_s']:,.0f} img/s | {row['epoch_seconds']:.1f} s")
        if lr_change and lr_change[1] != lr_change[0] and row["epoch"] < self.cfg.train.epochs and not stop:
            self.log(f"plateau: {self.cfg.schedule.monitor} stopped improving; lr {lr_change[0]:.3g} -> "
                     f"{lr_change[1]:.3g} from epoch {row['epoch'] + 1}")
        if stop:
            self.log(f"stopped early after epoch {row['epoch']}/{self.cfg.train.epochs}: {p.early_stop.stop_reason}")

    def _early_stop(self, row: dict) -> bool:
        """Count the epoch for early stopping; True (and hapi told to stop) if training should end here."""
        state, es, epochs = self.progress.early_stop, self.cfg.train.early_stopping, self.cfg.train.epochs
        state.observe(row)
        if es.patience is None or state.bad_epochs < es.patience or row["epoch"] >= epochs:
            return False
        state.stopped_epoch, state.planned_epochs = row["epoch"], epochs
        state.stop_reason = (f"{es.monitor} has not improved by more than {es.min_delta:g} for {state.bad_epochs} "
                             f"epochs (patience {es.patience}; best {state.best:.4f} at epoch {state.best_epoch})")
        self.model.stop_training = True
        return True


def progress_meta(p: Progress) -> dict:
    """Progress as plain data for the checkpoint.

    Args:
        p: the progress.
    Returns:
        A dict of plain values.
    """
    return {"epoch": p.epoch, "global_step": p.global_step, "best_acc": p.best_acc,
            "best_epoch": p.best_epoch, "rows": p.rows,
            "early_stop": dataclasses.asdict(p.early_stop) if p.early_stop else None}


def progress_from_meta(meta: dict) -> Progress:
    """The Progress a checkpoint's meta describes (the inverse of progress_meta).

    Args:
        meta: what progress_meta wrote (checkpoints from before early stopping lack "early_stop").
    Returns:
        The progress.
    """
    saved = meta.get("early_stop")
    return Progress(meta["epoch"], meta["global_step"], meta["best_acc"], meta["best_epoch"], list(meta["rows"]),
                    EarlyStopState(**saved) if saved else None)
