"""The training flow through paddle.Model: build data, network, callbacks in order; fit; test the best.

train(cfg, run_dir) is the whole of it; the callbacks (callbacks.py) do the per-epoch work and
hold the hapi quirks about losses, epochs and checkpoints. One quirk is handled here: the
auto-added LRScheduler callback steps per batch, so we pass our own, and optim.py counts every
schedule in steps, so epoch schedules still change exactly at epoch boundaries.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import paddle

from . import distributed, fileio, mixing, rundir, runlog, signals
from .callbacks import GradNormProbe, NonFiniteLoss, Progress, RunRecorder, progress_from_meta
from .checkpoint import BEST, LAST, load_checkpoint, load_file, load_weights, restore_optimizer
from .config import Config, dump_yaml
from .data import BatchLoader, class_names, data_root, dataset_stats, load_splits, with_recorded_root
from .errors import CheckpointError, RunDirError, TrainingFailed
from .evaluate import evaluate_split
from .network import build_network, freeze, initialize_from
from .plots import plot_curves
from .report import model_report
from .runtime import environment_record, select_device
from .vdl import VdlLogger


class Interrupted(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so both take the same path."""


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
    # Dev/test labels; training may feed float (B, K) soft targets (mixing.py), which dynamic mode
    # passes to the loss and metric as they are (the label spec only shapes static-graph feeds).
    labels = paddle.static.InputSpec([None, 1], "int64", "label")
    model = paddle.Model(net, inputs, labels)
    params = [p for p in net.parameters() if p.trainable and not p.stop_gradient]
    world = distributed.world_size()  # > 1 under paddle.distributed.launch: Model wraps net in DataParallel
    loss = distributed.GlobalMeanLoss(world) if world > 1 else mixing.CrossEntropy()
    model.prepare(build_optimizer(cfg, params, steps_per_epoch), loss, paddle.metric.Accuracy())
    return model


def make_loaders(cfg: Config, splits: dict) -> dict[str, BatchLoader]:
    """Loaders for every split: training shuffled and augmented (mixed, soft targets), the others in order, never mixed.

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
                                    rank=distributed.rank(), world=distributed.world_size(),
                                    mixer=mixing.BatchMixer.from_config(cfg))}
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
        progress = progress_from_meta(state["meta"])
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
    train_log = runlog.TrainLog(Path(run_dir), log)
    with sigterm_as_interrupt(), rundir.locked(Path(run_dir)), train_log.noting_the_end():
        results = _train(cfg, Path(run_dir), resume, train_log, init_state)
        train_log.note(f"finished: test accuracy {100 * results['test_acc']:.2f}% on {results['test_samples']} "
                       f"images (best epoch {results['best_epoch']})")
        return results


def _train(cfg: Config, run_dir: Path, resume: bool, log: runlog.TrainLog, init_state: dict | None) -> dict:
    """train() without the signal set-up."""
    started = time.perf_counter()
    device = select_device(cfg.runtime.device)
    data_cfg = with_recorded_root(cfg.data, runlog.recorded_data_root(run_dir))  # a resume without $PADDLE_CNN_DATA
    splits = load_splits(data_cfg, cfg.model.in_channels, cfg.train.seed)
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
                                  f"shape; it was trained with another architecture. Point it at a run of the "
                                  f"same model.")
    freeze(net, cfg.model.freeze)
    model = prepare_model(cfg, net, shape, len(loaders["train"]))
    progress = _start_run(cfg, run_dir, model, report, resume)
    log.start(runlog.record_session(run_dir, environment_record(device), resume, progress.epoch, data_root(data_cfg)),
              cfg.train.epochs)
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
        # A run that stopped early (and was not given more patience or epochs) goes straight to its test.
        if cfg.train.epochs > progress.epoch and not recorder.stopped_early:
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
        "stopped_early": bool(progress.early_stop.stopped_epoch),
        "stopped_epoch": progress.early_stop.stopped_epoch or None, "stop_reason": progress.early_stop.stop_reason,
    }
    fileio.write_json(run_dir / rundir.RESULTS, results)
    plot_curves(progress.rows, run_dir / rundir.CURVES, f"{run_dir.name}: {cfg.model.name} on {cfg.data.name}")
    return results
