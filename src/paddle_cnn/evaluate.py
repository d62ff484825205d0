"""Judging trained networks: reopen a run, evaluate it on a split, per-class confusion, logits.

Nothing here trains: runs are reopened with their best weights in an evaluation-only
paddle.Model (no optimizer, no schedule), reading only the splits asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle

from . import fileio, rundir, runlog
from .callbacks import LossMeter
from .checkpoint import BEST, LAST, load_checkpoint, load_file, load_weights
from .config import load_config
from .data import BatchLoader, load_splits, with_recorded_root
from .data import class_names as data_class_names
from .errors import RunDirError
from .network import build_network
from .plots import plot_confusion
from .runtime import select_device


def output_names(cfg) -> list[str]:
    """Names of the run's output classes, by label.

    Args:
        cfg: the run config.
    Returns:
        The dataset's names (following data.classes), or the label numbers if the counts differ.
    """
    names = data_class_names(cfg.data)
    return names if len(names) == cfg.model.num_classes else [str(i) for i in range(cfg.model.num_classes)]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits.

    Args:
        logits: (N, K) scores.
    Returns:
        (N, K) probabilities.
    """
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def predict_logits(model, images: np.ndarray) -> np.ndarray:
    """Logits of a paddle.Model (predict_batch) or a bare network (eval-mode forward).

    Args:
        model: paddle.Model or paddle.nn.Layer.
        images: (N, C, H, W) normalised float32.
    Returns:
        (N, K) float32 logits.
    """
    if hasattr(model, "predict_batch"):
        return np.asarray(model.predict_batch([images])[0])
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(images)).numpy()


def confusion_report(model, loader, class_names: list[str], png_path, title: str = "") -> dict:
    """Confusion matrix of a model over a whole loader, drawn to a PNG.

    Args:
        model: paddle.Model (or network) with the weights to judge.
        loader: yields [images (B, C, H, W), labels (B, 1)] batches (a data.BatchLoader).
        class_names: names by label; also fixes the matrix size.
        png_path: where confusion_matrix.png goes.
        title: prefix for the figure title (e.g. the run name).
    Returns:
        {"confusion_matrix": rows = true, columns = predicted (list of lists), "per_class_acc":
        {name: acc or None when the class has no samples}, "samples": n, "acc": overall accuracy}.
    """
    k = len(class_names)
    matrix = np.zeros((k, k), dtype=np.int64)
    for images, labels in loader:
        pred = predict_logits(model, images).argmax(axis=1)
        np.add.at(matrix, (np.asarray(labels).reshape(-1), pred), 1)
    n = int(matrix.sum())
    row_sums = matrix.sum(axis=1)
    per_class = {name: (float(matrix[i, i] / row_sums[i]) if row_sums[i] else None)
                 for i, name in enumerate(class_names)}
    acc = float(np.trace(matrix) / n) if n else 0.0
    plot_confusion(matrix, class_names, png_path, f"{title + ': ' if title else ''}accuracy {100 * acc:.2f}% "
                   f"on {n:,} samples")
    return {"confusion_matrix": matrix.tolist(), "per_class_acc": per_class, "samples": n, "acc": acc}


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


def load_network(run_dir: Path, checkpoint: str = "best"):
    """A run's config and its network with the best (or last) weights, without reading the dataset.

    Args:
        run_dir: the run directory.
        checkpoint: "best" (best dev accuracy) or "last" (the last completed epoch).
    Returns:
        (cfg, network).
    """
    run_dir = Path(run_dir)
    if not (run_dir / rundir.CONFIG).is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no config.yaml); give the folder "
                          f"`paddle-cnn train` printed.")
    cfg = load_config(run_dir / rundir.CONFIG)
    select_device(cfg.runtime.device)
    net = build_network(cfg)
    if checkpoint == "last":
        load_weights(net, load_checkpoint(run_dir)["model"], run_dir / LAST)
    else:
        load_weights(net, load_file(run_dir / BEST), run_dir / BEST)
    return cfg, net


def eval_model(net, input_shape) -> paddle.Model:
    """Wrap a network in paddle.Model for evaluation only: loss and accuracy, no optimizer.

    Args:
        net: the network, weights loaded.
        input_shape: (C, H, W).
    Returns:
        The prepared paddle.Model.
    """
    inputs = paddle.static.InputSpec([None, *input_shape], "float32", "image")
    labels = paddle.static.InputSpec([None, 1], "int64", "label")
    model = paddle.Model(net, inputs, labels)
    model.prepare(None, paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return model


def load_run(run_dir: Path, splits: tuple[str, ...] = ("dev", "test")):
    """Reopen a finished run for judging: config, loaders of the splits asked for, best weights.

    Only those splits are read and preprocessed, and no optimizer or schedule is built. The data is
    found where the run found it, if nothing else names a root (data.with_recorded_root).

    Args:
        run_dir: the run directory.
        splits: the splits wanted ("train", "dev", "test").
    Returns:
        (cfg, {split: BatchLoader in order}, evaluation-only paddle.Model).
    """
    cfg, net = load_network(run_dir)
    data_cfg = with_recorded_root(cfg.data, runlog.recorded_data_root(run_dir))
    data = load_splits(data_cfg, cfg.model.in_channels, cfg.train.seed, names=splits)
    loaders = {name: BatchLoader(split, cfg.train.eval_batch_size) for name, split in data.items()}
    shape = tuple(next(iter(data.values())).images.shape[1:])
    return cfg, loaders, eval_model(net, shape)


def evaluate_run(run_dir: Path, split: str = "test") -> dict:
    """Evaluate a run's best checkpoint on a split and record it in results.json.

    Args:
        run_dir: the run directory.
        split: "test" or "dev".
    Returns:
        {"split", "loss", "acc", "samples", "per_class_acc", "confusion_matrix"}; also writes
        confusion_matrix.png (confusion_matrix_dev.png for dev).
    """
    run_dir = Path(run_dir)
    cfg, loaders, model = load_run(run_dir, (split,))
    result = {"split": split, **evaluate_split(model, loaders[split])}
    png = run_dir / rundir.confusion_png(split)
    confusion = confusion_report(model, loaders[split], output_names(cfg), png,
                                 title=f"{run_dir.resolve().name}: {cfg.model.name} on {cfg.data.name} {split}")
    result["per_class_acc"] = confusion["per_class_acc"]
    result["confusion_matrix"] = confusion["confusion_matrix"]
    results_path = run_dir / rundir.RESULTS
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.setdefault("evaluations", {})[split] = result
    fileio.write_json(results_path, results)
    return result
