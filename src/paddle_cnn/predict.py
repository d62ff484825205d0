"""The predict command for a run's best checkpoint: dataset samples as a picture grid, user image
files as top-3 lists (the exported-model variant is in inference.py).

User image files go through data.preprocess, the function that prepared the training data, so
resizing (paddle's bilinear Resize), channel conversion and normalisation are identical to training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import rundir
from .data import apply_preprocess, dataset_stats, input_size, preprocess_spec, to_pixels
from .errors import DataError, UserError
from .evaluate import load_network, load_run, output_names, predict_logits, softmax
from .plots import plot_grid

# PIL mode of each dataset's own images: user files are read like the training files were, and
# data.preprocess then converts channels the way training did (grey repeated, colour averaged).
NATIVE_MODE = {"mnist": "L", "cifar10": "RGB"}
MAX_GRID = 100  # images drawn in predictions.png; more would make an unreadable figure
DARK_ON_LIGHT_MEAN = 127  # mean pixel value above which a digit is probably dark ink on paper


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
    check_count(count)
    cfg, loaders, model = load_run(run_dir, (split,))
    data = loaders[split].split
    count = sample_count(count, len(data.labels), split)
    mean, std = dataset_stats(cfg.data, cfg.model.in_channels)
    images = data.images[:count]
    show_samples(data.labels[:count], predict_logits(model, images), output_names(cfg),
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
    cfg, net = load_network(run_dir)
    net.eval()
    prepared = [(Path(p), *prepare_file(Path(p), cfg)) for p in paths]  # all files checked before any output
    print_top3(prepared, predict_logits(net, np.concatenate([x for _, _, x in prepared])), output_names(cfg),
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
