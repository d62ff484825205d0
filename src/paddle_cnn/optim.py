"""Optimizers and learning-rate schedules by config name.

Schedules are built in optimizer steps and stepped once per batch (hapi's LRScheduler callback
default). Epoch-based settings are converted to steps here, so a step decay still falls exactly on
epoch boundaries while cosine and one-cycle move smoothly within an epoch. The exception is
`plateau`, which only the dev metric moves: its per-batch step is a no-op and RunRecorder steps it
once per epoch (step_plateau), before the checkpoint that saves its state.
"""

from __future__ import annotations

import paddle

from . import compat
from .config import Config, ScheduleConfig


class PlateauSchedule(paddle.optimizer.lr.ReduceOnPlateau):
    """ReduceOnPlateau on a dev metric; step() without a metric (hapi's per-batch call) does nothing.

    Its state (lr, best, bad epochs, cooldown) goes through ReduceOnPlateau.state_dict into the
    optimizer's state, hence into the checkpoint.
    """

    def __init__(self, lr: float, s: ScheduleConfig):
        mode = "max" if s.monitor == "dev_acc" else "min"
        super().__init__(lr, mode=mode, factor=s.factor, patience=s.patience, cooldown=s.cooldown, min_lr=s.min_lr)
        self.monitor = s.monitor

    def step(self, metrics=None, epoch=None):
        if metrics is not None:
            super().step(metrics, epoch)


def step_plateau(optimizer: paddle.optimizer.Optimizer, row: dict) -> tuple[float, float] | None:
    """Step a plateau schedule with the epoch's dev metric (any other schedule: nothing).

    Args:
        optimizer: the run's optimizer.
        row: the epoch's metrics row (dev_acc, dev_loss).
    Returns:
        (lr before, lr after) if the schedule is plateau, else None.
    """
    sched = compat.lr_scheduler_of(optimizer)
    if not isinstance(sched, PlateauSchedule):
        return None
    before = sched.last_lr
    sched.step(float(row[sched.monitor]))
    return before, sched.last_lr


def build_schedule(cfg: Config, steps_per_epoch: int):
    """The learning rate: a float for `constant`, else a paddle LRScheduler counted in steps.

    Args:
        cfg: the run config (optimizer.lr, schedule.*, train.epochs).
        steps_per_epoch: batches per training epoch.
    Returns:
        float or paddle.optimizer.lr.LRScheduler.
    """
    s, lr = cfg.schedule, cfg.optimizer.lr
    total = cfg.train.epochs * steps_per_epoch
    warmup = int(round(s.warmup_epochs * steps_per_epoch))
    lr_sched = paddle.optimizer.lr
    if s.name == "constant":
        sched = lr
    elif s.name == "plateau":  # config refuses warmup_epochs with it
        return PlateauSchedule(lr, s)
    elif s.name == "step":
        sched = lr_sched.StepDecay(lr, step_size=s.step_size * steps_per_epoch, gamma=s.gamma)
    elif s.name == "cosine":
        sched = lr_sched.CosineAnnealingDecay(lr, T_max=max(1, total - warmup), eta_min=s.min_lr)
    else:  # onecycle: warmup_epochs is its rising phase (default 30% of the run)
        pct = s.warmup_epochs / cfg.train.epochs if s.warmup_epochs else 0.3
        return lr_sched.OneCycleLR(max_learning_rate=lr, total_steps=max(2, total), phase_pct=min(pct, 0.99),
                                   end_learning_rate=s.min_lr or lr / 1e4)
    if warmup and s.name != "constant":
        sched = lr_sched.LinearWarmup(sched, warmup_steps=warmup, start_lr=0.0, end_lr=lr)
    elif warmup:
        sched = lr_sched.LinearWarmup(lr, warmup_steps=warmup, start_lr=0.0, end_lr=lr)
    return sched


def build_optimizer(cfg: Config, parameters, steps_per_epoch: int) -> paddle.optimizer.Optimizer:
    """The configured optimizer over `parameters`, with its schedule.

    Args:
        cfg: the run config.
        parameters: trainable parameters.
        steps_per_epoch: batches per training epoch.
    Returns:
        A paddle optimizer.
    """
    o = cfg.optimizer
    lr = build_schedule(cfg, steps_per_epoch)
    clip = paddle.nn.ClipGradByGlobalNorm(o.grad_clip_norm) if o.grad_clip_norm else None
    common = {"learning_rate": lr, "parameters": parameters, "weight_decay": o.weight_decay or None,
              "grad_clip": clip}
    opt = paddle.optimizer
    builders = {
        "sgd": lambda: opt.SGD(**common),
        "momentum": lambda: opt.Momentum(momentum=o.momentum, **common),
        "adam": lambda: opt.Adam(**common),
        "adamw": lambda: opt.AdamW(**{**common, "weight_decay": o.weight_decay}),
        "rmsprop": lambda: opt.RMSProp(momentum=o.momentum if o.momentum else 0.0, **common),
        "adagrad": lambda: opt.Adagrad(**common),
        "adadelta": lambda: opt.Adadelta(**common),
    }
    return builders[o.name]()
