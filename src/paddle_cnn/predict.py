"""Predictions of a run's best checkpoint: dataset samples as a picture grid, user image files as
top-3 lists, and the confusion matrix of a whole split.

User image files go through data.preprocess, the function that prepared the training data, so
resizing (paddle's bilinear Resize), channel conversion and normalisation are identical to training.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import paddle

from . import rundir
from .data import apply_preprocess, class_names as data_class_names, dataset_stats, input_size, preprocess_spec
from .errors import DataError, RunDirError, UserError
from .fileio import atomic_write
from .report import _pyplot

# PIL mode of each dataset's own images: user files are read like the training files were, and
# data.preprocess then converts channels the way training did (grey repeated, colour averaged).
NATIVE_MODE = {"mnist": "L", "cifar10": "RGB"}
MAX_GRID = 100  # images drawn in predictions.png; more would make an unreadable figure
DARK_ON_LIGHT_MEAN = 127  # mean pixel value above which a digit is probably dark ink on paper
WRONG_COLOR, RIGHT_COLOR = "#d62728", "#2a7a2a"


def class_names(cfg) -> list[str]:
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


def plot_confusion(matrix: np.ndarray, names: list[str], path, title: str) -> None:
    """Draw a confusion matrix: counts in the cells, blue diagonal, red errors, shade = share of the row.

    Args:
        matrix: (K, K) counts, rows = true class, columns = predicted.
        names: class names.
        path: PNG to write.
        title: figure title.
    """
    plt = _pyplot()
    k = len(names)
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)  # by row, so a small class's errors are as visible as a big one's
    diagonal = np.eye(k, dtype=bool)
    # Errors are often 0.1% of a row: a square root lifts them off white without hiding the scale.
    colours = np.where(diagonal[..., None], plt.get_cmap("Blues")(share), plt.get_cmap("Reds")(np.sqrt(share) * 0.8))
    fig, ax = plt.subplots(figsize=(2.4 + 0.62 * k, 1.7 + 0.55 * k), layout="constrained")
    colours[matrix == 0] = (1.0, 1.0, 1.0, 1.0)
    ax.imshow(colours)
    for i in range(k):
        for j in range(k):
            count = int(matrix[i, j])
            dark = share[i, j] > 0.55 if i == j else np.sqrt(share[i, j]) * 0.8 > 0.55
            color = "white" if dark else ("#aaaaaa" if count == 0 else "black")
            ax.text(j, i, str(count), ha="center", va="center", fontsize=9 if count < 1000 else 8, color=color)
    long_names = max(len(s) for s in names) > 3
    ax.set_xticks(range(k), names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted class", ylabel="true class")
    right = ax.secondary_yaxis("right")  # per-class accuracy next to each row, where the eye already is
    right.set_yticks(range(k), [f"{100 * matrix[i, i] / rows[i, 0]:.1f}%" if rows[i, 0] else "-" for i in range(k)])
    right.set_ylabel("per-class accuracy (diagonal / row)")
    ax.set_title(f"{title}\nblue: correct, red: wrong; shade: share of the true class", fontsize=10)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def run_predict(args) -> int:
    """`paddle-cnn predict`: dataset samples (grid PNG) or image files (top-3), best checkpoint.

    Args:
        args: parsed CLI arguments (run_dir, images, split, count).
    Returns:
        Exit code 0; user-fixable problems raise UserError subclasses.
    """
    if args.images:
        return predict_files(Path(args.run_dir), args.images)
    return predict_samples(Path(args.run_dir), args.split, args.count)


def predict_samples(run_dir: Path, split: str, count: int) -> int:
    """Predict the first `count` samples of a split, print them and draw predictions.png.

    Args:
        run_dir: the run directory.
        split: "test" or "dev".
        count: samples to predict.
    Returns:
        Exit code 0.
    """
    from .engine import load_run  # lazily: engine may import this module

    check_count(count)
    cfg, loaders, model = load_run(run_dir)
    data = loaders[split].split
    count = sample_count(count, len(data.labels), split)
    mean, std = dataset_stats(cfg.data, cfg.model.in_channels)
    images = data.images[:count]
    show_samples(data.labels[:count], predict_logits(model, images), class_names(cfg),
                 to_pixels(images[:MAX_GRID], mean, std), run_dir / rundir.PREDICTIONS,
                 f"{run_dir.resolve().name}: {cfg.model.name} on {cfg.data.name} {split}", split)
    return 0


def check_count(count: int) -> None:
    """Refuse a --count below 1, before any data is read."""
    if count < 1:
        raise UserError(f"--count must be at least 1 (got {count}).")


def sample_count(count: int, available: int, split: str) -> int:
    """--count clipped to the split's size, with a note when it asks for more."""
    if count > available:
        print(f"note: the {split} split has only {available} samples; predicting all of them.")
    return min(count, available)


def show_samples(labels: np.ndarray, logits: np.ndarray, names: list[str], pixels: np.ndarray, path: Path,
                 title: str, split: str) -> None:
    """Print one line per sample (true, predicted, probability) and draw the grid PNG.

    Args:
        labels: (N,) true labels. logits: (N, K) outputs.
        names: class names by label. pixels: uint8 (M, H, W, C) pictures of the first M <= N samples.
        path: PNG to write. title: figure title's start, e.g. "run: lenet on mnist test".
        split: "test" or "dev", for the accuracy line.
    """
    count = len(labels)
    probs = softmax(logits)
    pred = probs.argmax(axis=1)
    w = max(len(s) for s in names)
    for i in range(count):
        mark = "  WRONG" if pred[i] != labels[i] else ""
        print(f"{i:>5}  true {names[labels[i]]:<{w}}  pred {names[pred[i]]:<{w}}  p={probs[i, pred[i]]:.3f}{mark}")
    acc = float(np.mean(pred == labels))
    print(f"accuracy on these {count} {split} samples: {100 * acc:.2f}% ({int(np.sum(pred == labels))}/{count})")
    shown = f" (first {MAX_GRID} shown)" if count > MAX_GRID else ""
    plot_grid(pixels, [names[t] for t in labels[:MAX_GRID]], [names[p] for p in pred[:MAX_GRID]], path,
              f"{title}, accuracy {100 * acc:.1f}% on these {count} samples{shown}")
    print(f"predictions.png: {path}")


def to_pixels(images: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """Undo the normalisation: (N, C, H, W) model inputs back to uint8 (N, H, W, C) pixels.

    Args:
        images: normalised batch.
        mean: per-channel mean (pixel units) used to normalise.
        std: per-channel std (pixel units).
    Returns:
        uint8 array (N, H, W, C).
    """
    pixels = images * np.asarray(std).reshape(1, -1, 1, 1) + np.asarray(mean).reshape(1, -1, 1, 1)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def plot_grid(pixels: np.ndarray, true: list[str], pred: list[str], path, title: str) -> None:
    """A grid of images titled "pred X / true Y"; wrong ones get a red title and a red frame.

    Args:
        pixels: uint8 (N, H, W, C) images (C = 1 is drawn grey).
        true: true class name per image.
        pred: predicted class name per image.
        path: PNG to write.
        title: figure title.
    """
    plt = _pyplot()
    n = len(pixels)
    ncols = min(n, max(4, math.ceil(math.sqrt(n))), 10)
    nrows = math.ceil(n / ncols)
    labels = [f"pred {p} / true {t}" for t, p in zip(true, pred)]
    if max(len(s) for s in labels) > 20:  # long CIFAR names: two lines keep the columns narrow
        labels = [s.replace(" / ", " /\n") for s in labels]
    title_lines = max(s.count("\n") + 1 for s in labels)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.75 * ncols, (1.75 + 0.2 * title_lines) * nrows + 0.7),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, img, t, p, label in zip(axes.flat, pixels, true, pred, labels):
        wrong = t != p
        if img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])  # ticks off but spines kept: the spines are the frame
        ax.set_title(label, fontsize=9, color=WRONG_COLOR if wrong else RIGHT_COLOR,
                     fontweight="bold" if wrong else "normal")
        for spine in ax.spines.values():
            spine.set_edgecolor(WRONG_COLOR if wrong else "#bbbbbb")
            spine.set_linewidth(4 if wrong else 0.8)
    fig.suptitle(title + "\nred title and frame: wrong prediction", fontsize=11)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def read_image(path: Path, mode: str) -> np.ndarray:
    """Read a PNG/JPG of any size as uint8 pixels (H, W, C) in PIL mode "L" or "RGB".

    Transparent parts are laid on white, as image viewers show them.

    Args:
        path: image file.
        mode: "L" or "RGB".
    Returns:
        uint8 array (H, W, 1 or 3).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and not later
            if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit PNG: convert() would clip to 255
                img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) / 257, 0, 255).astype(np.uint8))
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            array = np.asarray(img.convert(mode))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; it is not a readable PNG/JPG image.") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a readable PNG/JPG image.") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable PNG/JPG image (Pillow does not recognise its format).") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # Pillow reports truncated or corrupt data with any of these.
        raise DataError(f"{path}: not a readable PNG/JPG image; it is truncated or corrupt ({exc}).") from None
    return array.reshape(*array.shape[:2], -1)


def file_preprocessing(cfg) -> dict:
    """How an image file becomes this run's model input, as plain data (an export's preprocess.json).

    Args:
        cfg: the run config.
    Returns:
        {"read_mode": PIL mode the file is read in, and data.preprocess_spec's size, channels, mean, std}.
    """
    size = input_size(cfg.data)
    # data.preprocess_spec with the size forced: user files of any size are resized with the rule
    # training data used (only the target size differs when the run did not resize).
    return {"read_mode": NATIVE_MODE[cfg.data.name], **preprocess_spec(cfg.data, cfg.model.in_channels, size)}


def prepare_pixels(path: Path, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and preprocess it as `spec` (file_preprocessing) says.

    Args:
        path: PNG/JPG file.
        spec: {"read_mode", "size", "channels", "mean", "std"}.
    Returns:
        (raw uint8 pixels (H, W, C), model input float32 (1, C, S, S)).
    """
    pixels = read_image(path, spec["read_mode"])
    x = apply_preprocess(pixels[None], spec["size"], spec["channels"], spec["mean"], spec["std"])
    return pixels, x


def prepare_file(path: Path, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and turn it into exactly what the model saw in training.

    Args:
        path: PNG/JPG file.
        cfg: the run config.
    Returns:
        (raw uint8 pixels (H, W, C), model input float32 (1, C, S, S)).
    """
    return prepare_pixels(path, file_preprocessing(cfg))


def predict_files(run_dir: Path, paths: list[str]) -> int:
    """Print the top-3 classes with softmax probabilities for each image file.

    Args:
        run_dir: the run directory.
        paths: image files.
    Returns:
        Exit code 0.
    """
    from .engine import load_network  # lazily: engine imports this module

    cfg, net = load_network(run_dir)
    net.eval()
    prepared = [(Path(p), *prepare_file(Path(p), cfg)) for p in paths]  # all files checked before any output
    print_top3(prepared, predict_logits(net, np.concatenate([x for _, _, x in prepared])), class_names(cfg),
               cfg.data.name)
    return 0


def print_top3(prepared: list, logits: np.ndarray, names: list[str], dataset: str) -> None:
    """Print each file's top-3 classes with softmax probabilities (and the MNIST polarity hint).

    Args:
        prepared: (path, raw pixels, model input) per file.
        logits: (N, K) model outputs, one row per file.
        names: class names by label.
        dataset: "mnist" or "cifar10".
    """
    probs = softmax(logits)
    k = min(3, len(names))
    for (path, pixels, x), p in zip(prepared, probs):
        top = np.argsort(-p)[:k]
        ranked = "  ".join(f"{rank}. {names[c]} p={p[c]:.4f}" for rank, c in enumerate(top, 1))
        h, w = pixels.shape[:2]
        print(f"{path} ({w}x{h} -> {'x'.join(map(str, x.shape[1:]))}): {ranked}")
        brightness = float(pixels.mean())
        if dataset == "mnist" and brightness > DARK_ON_LIGHT_MEAN:
            print(f"  note: mean brightness {brightness:.0f}/255 suggests a dark digit on a light background; "
                  f"MNIST models expect a white digit on black. It was not inverted: invert it yourself "
                  f"if that is what it is.")
