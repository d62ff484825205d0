"""Training and evaluation through paddle.Model: build data, model, callbacks; fit; test the best.

hapi quirks handled here, in one place:
- fit/evaluate report the last batch's loss: RunRecorder accumulates the size-weighted mean.
- the auto-added LRScheduler callback steps per batch: we pass our own, and optim.py counts every
  schedule in steps, so epoch schedules still change exactly at epoch boundaries.
- fit always starts at epoch 0 and has no resume: the recorder offsets epochs, and the checkpoint
  holds weights, optimizer and scheduler state, epoch, global step and best metric.
- ModelCheckpoint keeps no best model: the recorder saves best.pdparams on dev accuracy.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle

from . import compat, distributed, fast_conv, fileio, rundir, signals
from .checkpoint import (BEST, LAST, load_checkpoint, load_file, load_weights, restore_optimizer, save_best,
                         save_checkpoint)
from .config import Config, dump_yaml, to_dict
from .errors import CheckpointError, RunDirError, TrainingFailed
from .data import BatchLoader, class_names, dataset_stats, load_splits
from .registry import build_model, model_info
from .report import model_report, plot_curves
from .runtime import environment_record, select_device
from .vdl import VdlLogger


class NonFiniteLoss(Exception):
    """Training produced a NaN or infinite loss."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so both take the same path."""


@dataclass
class Progress:
    """Where training stands; what a checkpoint must restore."""

    epoch: int = 0  # completed epochs
    global_step: int = 0
    best_acc: float = -1.0
    best_epoch: int = 0
    rows: list = field(default_factory=list)


def build_network(cfg: Config):
    """Build the configured network, seeded so the same config gives the same initial weights.

    With runtime.fast_conv its plain Conv2D layers become fast_conv.FastConv2D (same weights).

    Args:
        cfg: the run config.
    Returns:
        The paddle.nn.Layer.
    """
    paddle.seed(cfg.train.seed)
    net = build_model(cfg.model.name, **cfg.model.options())
    if cfg.runtime.fast_conv and model_info(cfg.model.name).fast_conv:
        fast_conv.enable(net)
    return net


def initialize_from(net, state: dict, source: str, log=print) -> list[str]:
    """Copy every tensor whose name and shape match from a state_dict into net.

    Used for fine-tuning (model.init_from) and by comparisons, so that variants start from the
    same weights in the layers they share.

    Args:
        net: the network to initialise.
        state: a state_dict.
        source: where it came from, for the log line.
        log: where the summary goes.
    Returns:
        Names of net's tensors that were NOT initialised from state.
    """
    own = net.state_dict()
    matched = {k: v for k, v in state.items() if k in own and list(v.shape) == list(own[k].shape)}
    for key, value in matched.items():  # per tensor: set_state_dict would warn about every skipped one
        own[key].set_value(value)
    skipped = sorted(set(own) - set(matched))
    log(f"initialised {len(matched)}/{len(own)} tensors from {source}"
        + (f"; kept fresh: {', '.join(skipped[:8])}{' ...' if len(skipped) > 8 else ''}" if skipped else ""))
    return skipped


def freeze(net, prefixes: list[str]) -> list[str]:
    """Stop training every parameter whose name starts with one of the prefixes.

    Args:
        net: the network.
        prefixes: layer names such as "stem" or "layer1" (model.freeze).
    Returns:
        The frozen parameter names. Raises ConfigError for a prefix that matches nothing.
    """
    from .errors import ConfigError

    frozen = []
    for prefix in prefixes:
        names = [n for n, _ in net.named_parameters() if n == prefix or n.startswith(prefix + ".")]
        if not names:
            tops = sorted({n.split(".")[0] for n, _ in net.named_parameters()})
            raise ConfigError(f"model.freeze: {prefix!r} names no layer of {type(net).__name__}; "
                              f"top-level layers are: {', '.join(tops)}.")
        frozen += names
    for name, param in net.named_parameters():
        if name in frozen:
            param.stop_gradient = True
    return frozen


def prepare_model(cfg: Config, net, input_shape, steps_per_epoch: int) -> paddle.Model:
    """Wrap a network in paddle.Model and prepare optimizer, loss and accuracy.

    Args:
        cfg: the run config.
        net: the network.
        input_shape: (C, H, W).
        steps_per_epoch: batches per epoch, for the schedule.
    Returns:
        The prepared paddle.Model.
    """
    from .optim import build_optimizer

    inputs = paddle.static.InputSpec([None, *input_shape], "float32", "image")
    labels = paddle.static.InputSpec([None, 1], "int64", "label")
    model = paddle.Model(net, inputs, labels)
    params = [p for p in net.parameters() if p.trainable and not p.stop_gradient]
    world = distributed.world_size()  # > 1 under paddle.distributed.launch: Model wraps net in DataParallel
    loss = distributed.GlobalMeanLoss(world) if world > 1 else paddle.nn.CrossEntropyLoss()
    model.prepare(build_optimizer(cfg, params, steps_per_epoch), loss, paddle.metric.Accuracy())
    return model


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
        # Conv kernels are 4-D and dense matrices 2-D; biases and BatchNorm scales (1-D) are left out.
        self.handles = [p.register_hook(self._hook(name)) for name, p in net.named_parameters()
                        if name.endswith("weight") and len(p.shape) >= 2 and not p.stop_gradient]

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


def evaluate_split(model: paddle.Model, loader: BatchLoader) -> dict:
    """True mean loss and accuracy of the model over a whole split.

    Args:
        model: prepared paddle.Model.
        loader: the split's loader.
    Returns:
        {"loss", "acc", "samples"}.
    """
    meter = LossMeter()
    result = model.evaluate(loader, verbose=0, callbacks=[meter])
    return {"loss": meter.mean, "acc": float(result["acc"]), "samples": meter.count}


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
                 f"loss {self.train_meter.mean:.4f} acc {100 * acc:.2f}% {rate:,.0f} img/s ETA {_fmt_time(eta)}")

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
            "dev_loss": self.dev_meter.mean, "dev_acc": float(logs["acc"]), "lr": float(compat.optimizer_of(self.model).get_lr()),
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
        save_checkpoint(self.run_dir, self.model, progress_meta(p))
        self.log(f"epoch {row['epoch']}/{self.cfg.train.epochs}: train loss {row['train_loss']:.4f} "
                 f"acc {100 * row['train_acc']:.2f}% | dev loss {row['dev_loss']:.4f} acc {100 * row['dev_acc']:.2f}% "
                 f"| lr {row['lr']:.3g} | {row['images_per_s']:,.0f} img/s | {row['epoch_seconds']:.1f} s")


def progress_meta(p: Progress) -> dict:
    """Progress as plain data for the checkpoint.

    Args:
        p: the progress.
    Returns:
        A dict of plain values.
    """
    return {"epoch": p.epoch, "global_step": p.global_step, "best_acc": p.best_acc,
            "best_epoch": p.best_epoch, "rows": p.rows}


def make_loaders(cfg: Config, splits: dict) -> dict[str, BatchLoader]:
    """Loaders for every split: training shuffled and augmented, the others in order.

    Args:
        cfg: the run config.
        splits: {"train", "dev", "test"} Splits.
    Returns:
        {"train", "dev", "test"} BatchLoaders.
    """
    aug = cfg.data.augment
    # Data-parallel: the training batch is global and each rank takes its slice; dev and test are
    # not sharded, every rank evaluates all of them (see distributed.py).
    loaders = {"train": BatchLoader(splits["train"], cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                                    crop_padding=aug.crop_padding, horizontal_flip=aug.horizontal_flip,
                                    rank=distributed.rank(), world=distributed.world_size())}
    for name in ("dev", "test"):
        loaders[name] = BatchLoader(splits[name], cfg.train.eval_batch_size)
    return loaders


def sigterm_as_interrupt():
    """Within the block, SIGTERM raises Interrupted, so it is handled like Ctrl-C.

    Returns:
        The context manager.
    """
    return signals.raising_on((signal.SIGTERM,), Interrupted)


def _hparams(cfg: Config) -> dict:
    m, o = cfg.model, cfg.optimizer
    opts = m.factory_options  # the two options the studies vary; absent ones are recorded as None, as before
    values = {"model": m.name, "use_residual": opts.get("use_residual"), "activation": opts.get("activation"),
              "optimizer": o.name,
              "lr": o.lr, "weight_decay": o.weight_decay, "schedule": cfg.schedule.name,
              "batch_size": cfg.train.batch_size, "epochs": cfg.train.epochs, "seed": cfg.train.seed}
    # VisualDL's hparams record rejects bools (an int subclass) and None: send those as text.
    return {k: (v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else str(v))
            for k, v in values.items()}


def _start_run(cfg: Config, run_dir: Path, model: paddle.Model, report: tuple, resume: bool) -> Progress:
    """Restore progress from the last checkpoint (resume; none yet: from scratch), then write the run's files."""
    progress = Progress()
    if resume:
        fileio.remove_temp_files(run_dir)  # left by a kill during an atomic write
    if resume and (run_dir / LAST).is_file():
        state = load_checkpoint(run_dir)
        load_weights(model.network, state["model"], run_dir / LAST)
        restore_optimizer(model, state["optimizer"])
        meta = state["meta"]
        progress = Progress(meta["epoch"], meta["global_step"], meta["best_acc"], meta["best_epoch"], list(meta["rows"]))
        if cfg.train.epochs < progress.epoch:
            raise RunDirError(f"train.epochs = {cfg.train.epochs} is fewer than the {progress.epoch} epochs {run_dir} "
                              f"has completed; resume with train.epochs >= {progress.epoch}.")
    # Only now, with the checkpoint loaded: a refused resume leaves the run as it was.
    fileio.write_text(run_dir / rundir.CONFIG, dump_yaml(cfg))
    fileio.write_text(run_dir / rundir.MODEL_REPORT_TXT, report[0])
    fileio.write_json(run_dir / rundir.MODEL_REPORT_JSON, report[1])
    fileio.write_jsonl(run_dir / rundir.METRICS, progress.rows)  # drops epochs that ran past the checkpoint
    return progress


def train(cfg: Config, run_dir: Path, resume: bool = False, log=print, init_state: dict | None = None) -> dict:
    """Train a model as configured, evaluate its best checkpoint on the test split.

    Args:
        cfg: the validated run config.
        run_dir: the run directory (prepared by the caller: new, or holding a run to resume).
        resume: continue from run_dir's last checkpoint.
        log: where progress lines go.
        init_state: initial weights for the tensors whose names and shapes match (comparisons).
    Returns:
        The results dict also written to results.json. Raises RunDirError if another process
        is writing run_dir.
    """
    # Anywhere in a run, loading and testing included, SIGTERM acts as Ctrl-C; one writer at a time.
    with sigterm_as_interrupt(), rundir.locked(Path(run_dir)):
        return _train(cfg, Path(run_dir), resume, log, init_state)


def _train(cfg: Config, run_dir: Path, resume: bool, log, init_state: dict | None) -> dict:
    """train() without the signal set-up."""
    started = time.perf_counter()
    device = select_device(cfg.runtime.device)
    splits = load_splits(cfg.data, cfg.model.in_channels, cfg.train.seed)
    loaders = make_loaders(cfg, splits)
    shape = tuple(splits["train"].images.shape[1:])
    report_net = build_network(cfg)  # a separate instance: summary runs a forward
    freeze(report_net, cfg.model.freeze)  # so "trainable params" excludes frozen layers
    report = model_report(report_net, shape)
    net = build_network(cfg)
    fresh = not (resume and (run_dir / LAST).is_file())  # a resume before any checkpoint starts over
    if init_state is not None and fresh:
        initialize_from(net, init_state, "the comparison's shared initialisation", log)
    if cfg.model.init_from and fresh:
        source = Path(cfg.model.init_from) / BEST
        if len(initialize_from(net, load_file(source), str(source), log)) == len(net.state_dict()):
            raise CheckpointError(f"model.init_from: no tensor of {source} matches {cfg.model.name} by name and "
                                  f"shape; it was trained with another architecture. Point it at a run of the same model.")
    freeze(net, cfg.model.freeze)
    model = prepare_model(cfg, net, shape, len(loaders["train"]))
    progress = _start_run(cfg, run_dir, model, report, resume)
    fileio.write_json(run_dir / rundir.ENV, {**environment_record(device), "resumed": resume})
    log(f"run directory: {run_dir}  ({len(splits['train'].labels)} train / {len(splits['dev'].labels)} dev / "
        f"{len(splits['test'].labels)} test images, {report[1]['trainable_params']:,} params, device {device})")
    vdl = VdlLogger(run_dir, (progress.epoch, progress.global_step) if resume else None, progress.rows)
    # Also on resume: the rewritten log replays scalars only, and the board should still show these.
    mean, std = dataset_stats(cfg.data, cfg.model.in_channels)
    vdl.sample_images(splits["train"].images[:8], splits["train"].labels[:8], class_names(cfg.data), mean, std)
    vdl.hparams(_hparams(cfg), ["epoch/acc", "epoch/loss"])
    recorder = RunRecorder(run_dir, cfg, loaders["train"], progress, vdl, log)
    callbacks = [recorder, paddle.callbacks.LRScheduler(by_step=True, by_epoch=False)]
    if distributed.world_size() > 1:
        callbacks.insert(0, distributed.DistributedSync(log))  # before the recorder: it fixes logs["acc"]
    if cfg.train.log_grad_norms:
        callbacks.append(GradNormProbe(net, vdl, progress, cfg.train.log_every))
    try:
        if cfg.train.epochs > progress.epoch:
            model.fit(loaders["train"], loaders["dev"], epochs=cfg.train.epochs - progress.epoch, verbose=0,
                      callbacks=callbacks)
    except NonFiniteLoss as exc:
        fileio.write_json(run_dir / rundir.RESULTS, {"status": "failed", "reason": str(exc),
                                                     **_summary(progress)})
        kept = (f"the last good checkpoint (epoch {progress.epoch}) is kept in {run_dir / 'checkpoints'}; once "
                f"fixed, continue with `paddle-cnn train --resume {run_dir}` (-o optimizer.lr=... is allowed)"
                if progress.epoch else "no epoch completed, so there is no checkpoint")
        raise TrainingFailed(f"{exc}. Training stopped; {kept}. Lower optimizer.lr or check the data.") from None
    finally:
        vdl.close()
    return finish(cfg, run_dir, model, loaders, progress, time.perf_counter() - started)


def _summary(p: Progress) -> dict:
    return {"epochs_completed": p.epoch, "best_epoch": p.best_epoch, "best_dev_acc": p.best_acc,
            "train_seconds": sum(r["epoch_seconds"] for r in p.rows)}


def finish(cfg: Config, run_dir: Path, model: paddle.Model, loaders: dict, progress: Progress,
           wall_seconds: float) -> dict:
    """Test the best checkpoint, write results.json and curves.png.

    Args:
        cfg: the run config.
        run_dir: the run directory.
        model: the trained paddle.Model.
        loaders: the split loaders.
        progress: final progress.
        wall_seconds: time since train() started (data loading included).
    Returns:
        The results dict.
    """
    load_weights(model.network, load_file(run_dir / BEST), run_dir / BEST)
    test = evaluate_split(model, loaders["test"])
    last = progress.rows[-1] if progress.rows else {}
    results = {
        "status": "finished", "model": cfg.model.name, "dataset": cfg.data.name,
        "test_acc": test["acc"], "test_loss": test["loss"], "test_samples": test["samples"],
        "dev_samples": len(loaders["dev"].split.labels), "train_samples": len(loaders["train"].split.labels),
        "final_dev_acc": last.get("dev_acc"), "final_train_loss": last.get("train_loss"),
        "images_per_s": float(np.median([r["images_per_s"] for r in progress.rows])) if progress.rows else None,
        "wall_seconds": wall_seconds, **_summary(progress),
    }
    fileio.write_json(run_dir / rundir.RESULTS, results)
    plot_curves(progress.rows, run_dir / rundir.CURVES, f"{run_dir.name}: {cfg.model.name} on {cfg.data.name}")
    return results


def load_network(run_dir: Path, checkpoint: str = "best"):
    """A run's config and its network with the best (or last) weights, without reading the dataset.

    Args:
        run_dir: the run directory.
        checkpoint: "best" (best dev accuracy) or "last" (the last completed epoch).
    Returns:
        (cfg, network).
    """
    from .config import load_config
    from .errors import RunDirError

    run_dir = Path(run_dir)
    if not (run_dir / rundir.CONFIG).is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no config.yaml); give the folder `paddle-cnn train` printed.")
    cfg = load_config(run_dir / rundir.CONFIG)
    select_device(cfg.runtime.device)
    net = build_network(cfg)
    if checkpoint == "last":
        load_weights(net, load_checkpoint(run_dir)["model"], run_dir / LAST)
    else:
        load_weights(net, load_file(run_dir / BEST), run_dir / BEST)
    return cfg, net


def load_run(run_dir: Path):
    """Rebuild a run's config, data loaders and prepared model with its best weights.

    Args:
        run_dir: the run directory.
    Returns:
        (cfg, loaders, model).
    """
    cfg, net = load_network(run_dir)
    splits = load_splits(cfg.data, cfg.model.in_channels, cfg.train.seed)
    loaders = make_loaders(cfg, splits)
    model = prepare_model(cfg, net, tuple(splits["train"].images.shape[1:]), len(loaders["train"]))
    return cfg, loaders, model


def evaluate_run(run_dir: Path, split: str = "test") -> dict:
    """Evaluate a run's best checkpoint on a split and record it in results.json.

    Args:
        run_dir: the run directory.
        split: "test" or "dev".
    Returns:
        {"split", "loss", "acc", "samples", "per_class_acc", "confusion_matrix"}; also writes
        confusion_matrix.png (confusion_matrix_dev.png for dev).
    """
    import json

    from .predict import class_names, confusion_report

    run_dir = Path(run_dir)
    cfg, loaders, model = load_run(run_dir)
    result = {"split": split, **evaluate_split(model, loaders[split])}
    png = run_dir / rundir.confusion_png(split)
    confusion = confusion_report(model, loaders[split], class_names(cfg), png,
                                 title=f"{run_dir.resolve().name}: {cfg.model.name} on {cfg.data.name} {split}")
    result["per_class_acc"] = confusion["per_class_acc"]
    result["confusion_matrix"] = confusion["confusion_matrix"]
    results_path = run_dir / rundir.RESULTS
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.setdefault("evaluations", {})[split] = result
    fileio.write_json(results_path, results)
    return result
