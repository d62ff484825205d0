"""Datasets: read through paddle.vision.datasets, decoded and normalised once, served in batches.

Paddle's dataset classes decode one sample per __getitem__ through PIL/transforms; on 2 CPU cores
that costs as much as a LeNet step. Here each split is read once with the real MNIST/Cifar10
classes, turned into one float32 NCHW array with paddle.vision.transforms (Resize per image, once;
Normalize on the whole array), and a BatchLoader slices batches out of memory. Shuffling and
augmentation are keyed by (seed, epoch), so a resumed run sees exactly the batches it would have.

Over 400 lines: two file formats' readers with their damage checks, the preprocessing spec that
exports record, the split rules and the loader. Left in one module for now because the export's
preprocess.json must come from exactly the code training uses; a datasets/loader split is next.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import socket
import struct
import tarfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from .config import DataConfig
from .errors import ConfigError, DataError

# Per-channel statistics of the training sets in pixel units (0-255): MNIST 0.1307/0.3081,
# CIFAR-10 0.4914/0.4822/0.4465 and 0.2470/0.2435/0.2616 (as measured on ../shared/data).
DEFAULT_STATS = {
    "mnist": ([33.318], [78.567]),
    "cifar10": ([125.307, 122.961, 113.858], [62.985, 62.093, 66.708]),
}
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR_FILE = "cifar-10-python.tar.gz"
CIFAR_MEMBERS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
DOWNLOAD_TIMEOUT_S = 10.0

# Side of each dataset's own square images: what a run trains on unless data.resize says otherwise.
IMAGE_SIZE = {"mnist": 28, "cifar10": 32}


def input_size(cfg: DataConfig) -> int:
    """Side of the images a run's model sees (data.resize, else the dataset's own size).

    Args:
        cfg: the data config.
    Returns:
        The side in pixels.
    """
    return cfg.resize or IMAGE_SIZE[cfg.name]


@dataclass
class Split:
    """One split in memory: normalised images (N, C, H, W) float32 and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray


def data_root(cfg: DataConfig) -> Path:
    """Resolve where datasets live: data.root, else $PADDLE_CNN_DATA, else Paddle's cache.

    A reopened run (evaluate, predict, export, --resume) first passes its section through
    with_recorded_root, which slots the root the run was trained from in before Paddle's cache.

    Args:
        cfg: the data section.
    Returns:
        The root directory (may not exist).
    """
    if cfg.root:
        return Path(cfg.root).expanduser()
    if os.environ.get("PADDLE_CNN_DATA"):
        return Path(os.environ["PADDLE_CNN_DATA"]).expanduser()
    return Path("~/.cache/paddle/dataset").expanduser()


def with_recorded_root(cfg: DataConfig, recorded: str | None) -> DataConfig:
    """The data section to reopen a run with: the root it was trained from, if nothing else names one.

    So a run trained with $PADDLE_CNN_DATA is evaluated without it. The order is data.root,
    $PADDLE_CNN_DATA, the recorded root if it still holds the files, Paddle's cache.

    Args:
        cfg: the run's data section, as in its config.yaml.
        recorded: the absolute data root the run recorded (runlog.recorded_data_root), or None.
    Returns:
        cfg itself, or a copy whose root is the recorded one.
    """
    if cfg.root or os.environ.get("PADDLE_CNN_DATA") or not recorded:
        return cfg
    candidate = dataclasses.replace(cfg, root=str(recorded))
    return candidate if all(p.is_file() for p in expected_files(candidate)) else cfg


def expected_files(cfg: DataConfig) -> list[Path]:
    """Files the configured dataset needs under the data root.

    Args:
        cfg: the data section.
    Returns:
        Absolute paths, in a stable order.
    """
    root = data_root(cfg)
    if cfg.name == "mnist":
        return [root / "mnist" / f for pair in MNIST_FILES.values() for f in pair]
    return [root / CIFAR_FILE]


def _missing_error(cfg: DataConfig, missing: list[Path]) -> DataError:
    names = "\n  ".join(str(p) for p in expected_files(cfg))
    return DataError(
        f"{cfg.name} data not found: missing {', '.join(p.name for p in missing)} under "
        f"{data_root(cfg)}. Expected:\n  {names}\nPoint data.root (or the PADDLE_CNN_DATA "
        f"environment variable) at a folder holding these files, or set data.download: true "
        f"to let Paddle download them into its cache (needs internet)."
    )


def _check_reachable(url: str) -> None:
    """Fail fast when the download host cannot be reached, instead of hanging in a retry loop."""
    host = urlparse(url).hostname
    outcome = {}

    def probe():
        try:
            socket.create_connection((host, 443), timeout=DOWNLOAD_TIMEOUT_S).close()
            outcome["ok"] = True
        except OSError as exc:
            outcome["error"] = exc.strerror or str(exc)

    # The socket timeout does not cover name resolution, which can stall far longer without DNS:
    # probe in a daemon thread and give up on it after the timeout either way.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(DOWNLOAD_TIMEOUT_S)
    if not outcome.get("ok"):
        reason = outcome.get("error", f"no answer within {DOWNLOAD_TIMEOUT_S:.0f} s")
        raise DataError(
            f"data.download is true but {host} cannot be reached ({reason}); this machine looks offline. "
            f"Copy the dataset files under data.root (see the README) and set data.download: false."
        )


def _read_idx_header(path: Path, expect_magic: int) -> tuple[int, ...]:
    """Read an idx(.gz) header, so a wrong or truncated file fails with a clear message."""
    fmt = ">IIII" if expect_magic == 2051 else ">II"
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(struct.calcsize(fmt))
        fields = struct.unpack(fmt, head)
    except (OSError, EOFError, zlib.error, struct.error) as exc:
        raise DataError(f"{path}: not a readable gzip idx file ({exc}). Replace it with an intact copy.") from None
    if fields[0] != expect_magic:
        kind = "images (magic 2051)" if expect_magic == 2051 else "labels (magic 2049)"
        raise DataError(
            f"{path}: expected an MNIST {kind} file but its header says magic {fields[0]}; "
            f"is it the wrong file (images and labels swapped)?"
        )
    return fields


def _load_mnist(cfg: DataConfig, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST with paddle.vision.datasets.MNIST; returns uint8-valued (N, 28, 28, 1) and labels."""
    from paddle.vision.datasets import MNIST

    image_path, label_path = (data_root(cfg) / "mnist" / f for f in MNIST_FILES[mode])
    missing = [p for p in (image_path, label_path) if not p.is_file()]
    if missing and not cfg.download:
        raise _missing_error(cfg, missing)
    if missing:
        _check_reachable(MNIST.URL_PREFIX)
        image_path = label_path = None  # paddle downloads into its own cache
    else:
        n_images = _read_idx_header(image_path, 2051)[1]
        n_labels = _read_idx_header(label_path, 2049)[1]
        if n_images != n_labels or n_images % 100:
            raise DataError(
                f"{image_path.parent}: {n_images} images but {n_labels} labels; paddle's MNIST reader needs "
                f"equal counts that are a multiple of 100."
            )
    try:
        ds = MNIST(image_path=image_path and str(image_path), label_path=label_path and str(label_path),
                   mode=mode, download=cfg.download, backend="cv2")
        images = np.stack(ds.images).reshape(-1, 28, 28, 1)
        labels = np.concatenate(ds.labels).astype("int64")
    except (OSError, EOFError, zlib.error, struct.error, ValueError) as exc:
        raise DataError(f"{image_path}: could not be decoded ({exc}); the file is truncated or corrupt.") from None
    return images, labels


def _load_cifar10(cfg: DataConfig, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 with paddle.vision.datasets.Cifar10; returns (N, 32, 32, 3) and labels."""
    from paddle.vision.datasets import Cifar10

    from . import compat

    path = data_root(cfg) / CIFAR_FILE
    if not path.is_file() and not cfg.download:
        raise _missing_error(cfg, [path])
    if not path.is_file():
        _check_reachable(compat.cifar10_url_prefix())
    else:
        _check_cifar_members(path, mode)
    try:
        # The archive's batches are pickles: only load archives you trust (see README, Security).
        ds = Cifar10(data_file=str(path) if path.is_file() else None, mode=mode,
                     download=cfg.download, backend="cv2")
        images = np.stack([s for s, _ in ds.data]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.array([lab for _, lab in ds.data], dtype="int64")
    except (OSError, EOFError, zlib.error, tarfile.TarError, ValueError, KeyError, AssertionError) as exc:
        raise DataError(f"{path}: could not be read ({exc}); the archive is truncated or corrupt.") from None
    except Exception as exc:  # pickle raises many types on garbage; all mean the same to the user
        raise DataError(f"{path}: a batch inside could not be unpickled ({type(exc).__name__}: {exc}).") from None
    return images, labels


def _check_cifar_members(path: Path, mode: str) -> None:
    try:
        with tarfile.open(path, mode="r") as tar:
            names = {Path(m.name).name for m in tar.getmembers()}
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise DataError(f"{path}: not a readable tar.gz archive ({exc}). Replace it with an intact copy.") from None
    missing = [m for m in CIFAR_MEMBERS[mode] if m not in names]
    if missing:
        raise DataError(
            f"{path}: the archive has no {', '.join(missing)}; a CIFAR-10 python archive "
            f"(cifar-10-batches-py/data_batch_1..5, test_batch) is expected."
        )


# How user image files and dataset images are resized: paddle.vision.transforms.Resize on each
# channel as a float32 PIL "F" image (bilinear), only when the size differs. Written into an
# export's preprocess.json so a deployment can reproduce it.
RESIZE_RULE = ("bilinear: paddle.vision.transforms.Resize((size, size)) on each channel as a float32 PIL "
               "'F' image, applied only when the image is not already size x size")
CHANNEL_RULE = "grey to colour: the grey channel repeated; colour to grey: the mean of the channels"


def preprocess_spec(cfg: DataConfig, in_channels: int, size: int | None = None) -> dict:
    """What preprocess does to raw pixels, as plain data (the single source for preprocess.json).

    Args:
        cfg: the data section (resize, mean, std).
        in_channels: channels the model expects.
        size: target side to force (user files, exports); default cfg.resize (None: keep the size).
    Returns:
        {"size", "channels", "mean", "std"}: arguments of apply_preprocess; mean/std in 0-255 pixel units.
    """
    mean, std = dataset_stats(cfg, in_channels)
    return {"size": size or cfg.resize, "channels": in_channels, "mean": mean, "std": std}


def preprocess(images: np.ndarray, cfg: DataConfig, in_channels: int) -> np.ndarray:
    """Turn raw pixels (N, H, W, C) in 0-255 into the model's normalised float32 NCHW input.

    The same function serves training data and user image files, so both see identical
    preprocessing; exports record preprocess_spec, the arguments it passes on.

    Args:
        images: pixel array, any numeric dtype, values 0-255.
        cfg: the data section (resize, mean, std).
        in_channels: channels the model expects (grey is repeated, colour averaged to grey).
    Returns:
        float32 array (N, in_channels, H', W').
    """
    return apply_preprocess(images, **preprocess_spec(cfg, in_channels))


def apply_preprocess(images: np.ndarray, size: int | None, channels: int, mean: list[float],
                     std: list[float]) -> np.ndarray:
    """Resize (RESIZE_RULE), convert channels (CHANNEL_RULE) and normalise raw pixels.

    Args:
        images: pixel array (N, H, W, C), any numeric dtype, values 0-255.
        size: target side, or None to keep the images' size.
        channels: channels the model expects.
        mean: per-channel mean in pixel units. std: per-channel std in pixel units.
    Returns:
        float32 array (N, channels, H', W'): (pixel - mean) / std.
    """
    from paddle.vision.transforms import Normalize, Resize

    images = images.astype("float32")
    if size and images.shape[1:3] != (size, size):
        images = _resize(images, size, Resize)
    if images.shape[3] != channels:
        images = _convert_channels(images, channels)
    chw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    # Normalize on the whole NCHW array at once: per-channel stats broadcast over N.
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, as one clear error
        out = Normalize(mean=mean, std=std, data_format="CHW")(chw).astype("float32")
    _check_finite(out, mean, std)
    return out


def _check_finite(x: np.ndarray, mean: list[float], std: list[float]) -> None:
    """Refuse non-finite model input: it trains into NaN silently (relu and max-pool hide it)."""
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argmax(bad.reshape(len(x), -1).any(axis=1)))
        raise DataError(f"preprocessing produced {int(bad.sum()):,} non-finite values (NaN or inf), the first "
                        f"in image {first}; training on them would only give NaN. Check data.mean {mean} and "
                        f"data.std {std} (a tiny std overflows float32) and the data files.")


def to_pixels(images: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """Undo the normalisation (the one place that does): (N, C, H, W) model inputs back to uint8 (N, H, W, C) pixels.

    Args:
        images: normalised batch.
        mean: per-channel mean (pixel units) used to normalise.
        std: per-channel std (pixel units).
    Returns:
        uint8 array (N, H, W, C).
    """
    pixels = images * np.asarray(std).reshape(1, -1, 1, 1) + np.asarray(mean).reshape(1, -1, 1, 1)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def dataset_stats(cfg: DataConfig, in_channels: int) -> tuple[list[float], list[float]]:
    """Mean and std per channel in pixel units: the config's, else the dataset's own.

    Args:
        cfg: the data section.
        in_channels: channels the model sees.
    Returns:
        (mean, std), each with in_channels values.
    """
    mean, std = DEFAULT_STATS[cfg.name]
    mean, std = cfg.mean or mean, cfg.std or std
    if len(mean) != in_channels:
        mean = [float(np.mean(mean))] * in_channels
    if len(std) != in_channels:
        std = [float(np.mean(std))] * in_channels
    return mean, std


def _resize(images: np.ndarray, size: int, resize_cls) -> np.ndarray:
    from PIL import Image

    resize = resize_cls((size, size))  # bilinear, as the book's transforms.Resize
    out = np.empty((len(images), size, size, images.shape[3]), dtype="float32")
    for i, img in enumerate(images):
        channels = [np.asarray(resize(Image.fromarray(img[:, :, c], mode="F"))) for c in range(img.shape[2])]
        out[i] = np.stack(channels, axis=-1)
    return out


def _convert_channels(images: np.ndarray, in_channels: int) -> np.ndarray:
    if in_channels == 1:
        return images.mean(axis=3, keepdims=True)
    if images.shape[3] == 1:
        return np.repeat(images, in_channels, axis=3)
    raise ConfigError(f"model.in_channels = {in_channels} cannot be made from {images.shape[3]}-channel images.")


def _take(n_wanted: int | None, available: int, key: str, dataset: str) -> int:
    if n_wanted is None:
        return available
    if n_wanted > available:
        raise ConfigError(f"{key} = {n_wanted} is larger than the {available} images {dataset} has for it.")
    return n_wanted


def split_indices(n_train_pool: int, cfg: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Carve dev from the training file and pick the training subset, deterministically.

    Args:
        n_train_pool: images in the training file.
        cfg: the data section (dev_size, dev_split, train_size).
        seed: the run's seed.
    Returns:
        (train indices, dev indices) into the training file.
    """
    dev_size = _take(cfg.dev_size, n_train_pool - 1, "data.dev_size", f"the {cfg.name} training file")
    if cfg.dev_split == "tail":  # CIFAR-10: the last 10,000 are data_batch_5, the book's dev set
        order = np.arange(n_train_pool)
    else:
        order = np.random.default_rng(seed).permutation(n_train_pool)
    dev, pool = order[n_train_pool - dev_size:], order[: n_train_pool - dev_size]
    n_train = _take(cfg.train_size, len(pool), "data.train_size", f"{cfg.name} (after carving dev)")
    return np.sort(pool[:n_train]), np.sort(dev)


def keep_classes(images: np.ndarray, labels: np.ndarray, classes: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Keep only the images of the given labels, relabelled 0..k-1 in the order given (data.classes).

    Args:
        images: (N, ...) images.
        labels: (N,) dataset labels.
        classes: labels to keep; None keeps everything unchanged.
    Returns:
        (images, labels) of the kept samples, in file order.
    """
    if classes is None:
        return images, labels
    remap = np.full(max(int(labels.max()), *classes) + 1, -1, dtype="int64")
    remap[classes] = np.arange(len(classes))
    keep = remap[labels] >= 0
    return images[keep], remap[labels[keep]]


def class_names(cfg: DataConfig) -> list[str]:
    """Names of the model's output classes, following data.classes.

    Args:
        cfg: the data section.
    Returns:
        Name of label i at index i.
    """
    names = CLASS_NAMES[cfg.name]
    return [names[c] for c in cfg.classes] if cfg.classes is not None else names


def load_raw_splits(cfg: DataConfig, seed: int, names=("train", "dev", "test")) -> dict[str, Split]:
    """Read splits as raw pixels, before preprocessing (exports preprocess them from preprocess.json).

    Args:
        cfg: the data section.
        seed: the run's seed (dev split and subsets depend on it).
        names: the splits wanted; the training file is only read for "train" or "dev".
    Returns:
        {name: Split} with uint8-valued (N, H, W, C) images.
    """
    loader = _load_mnist if cfg.name == "mnist" else _load_cifar10
    splits = {}
    if {"train", "dev"} & set(names):
        train_x, train_y = keep_classes(*loader(cfg, "train"), cfg.classes)
        train_idx, dev_idx = split_indices(len(train_x), cfg, seed)
        splits["train"] = Split(train_x[train_idx], train_y[train_idx])
        splits["dev"] = Split(train_x[dev_idx], train_y[dev_idx])
    if "test" in names:
        test_x, test_y = keep_classes(*loader(cfg, "test"), cfg.classes)
        n_test = _take(cfg.test_size, len(test_x), "data.test_size", f"the {cfg.name} test file")
        splits["test"] = Split(test_x[:n_test], test_y[:n_test])
    return {name: splits[name] for name in names}


def load_splits(cfg: DataConfig, in_channels: int, seed: int, names=("train", "dev", "test")) -> dict[str, Split]:
    """Read and preprocess splits (train, dev and test by default).

    Args:
        cfg: the data section.
        in_channels: channels the model expects.
        seed: the run's seed (dev split and subsets depend on it).
        names: the splits wanted; only these are preprocessed.
    Returns:
        {name: Split}.
    """
    raw = load_raw_splits(cfg, seed, names)
    return {name: Split(preprocess(split.images, cfg, in_channels), split.labels) for name, split in raw.items()}


class BatchLoader:
    """Batches of an in-memory Split, in the form paddle.Model.fit/evaluate accept.

    Iterating yields [images (B, C, H, W) float32, labels (B, 1) int64] as numpy arrays. With
    shuffle, the order is a permutation drawn from (seed, epoch); call set_epoch before each epoch.

    Data-parallel (world > 1): batch_size is the GLOBAL batch. Every rank draws the same order and
    augmentation and yields only its contiguous slice of each global batch (sizes differ by at
    most one), so the union over ranks of one step is exactly the single-process batch.

    mixer (mixing.BatchMixer, training only) erases and mixes each batch after crop and flip, with
    a generator of (seed, epoch, step); with mixing or label smoothing the labels are float (B, K)
    soft targets instead.
    """

    def __init__(self, split: Split, batch_size: int, shuffle: bool = False, seed: int = 0,
                 crop_padding: int = 0, horizontal_flip: bool = False, rank: int = 0, world: int = 1,
                 mixer=None):
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.crop_padding, self.horizontal_flip, self.mixer = crop_padding, horizontal_flip, mixer
        self.rank, self.world = rank, world
        self.epoch = 0
        tail = len(split.labels) % batch_size
        if world > 1 and (batch_size < world or 0 < tail < world):
            raise ConfigError(
                f"train.batch_size = {batch_size} is the global batch, split across {world} processes, and every "
                f"process needs at least one sample per step; with {len(split.labels)} training images "
                f"{'it is too small' if batch_size < world else f'the last batch of an epoch has only {tail}'}. "
                f"Choose another train.batch_size (or data.train_size), or launch fewer processes.")

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses.

        Args:
            epoch: zero-based epoch number.
        """
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.split.labels) // self.batch_size)

    def __iter__(self):
        n = len(self.split.labels)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        for step, start in enumerate(range(0, n, self.batch_size)):
            idx = order[start: start + self.batch_size]
            lo, hi = len(idx) * self.rank // self.world, len(idx) * (self.rank + 1) // self.world
            if self.crop_padding or self.horizontal_flip or self.mixer is not None:
                # Augment the whole global batch, so every rank consumes the same random numbers.
                images, labels = self._augmented(idx, rng, step)
                yield [images[lo:hi], labels[lo:hi]]
            else:
                yield [self.split.images[idx[lo:hi]], self.split.labels[idx[lo:hi]].reshape(-1, 1)]

    def _augmented(self, idx: np.ndarray, rng: np.random.Generator, step: int) -> tuple[np.ndarray, np.ndarray]:
        """One whole global batch, cropped and flipped (epoch generator), then erased and mixed (step's)."""
        images, labels = self.split.images[idx], self.split.labels[idx]
        if self.crop_padding or self.horizontal_flip:
            images = augment_batch(images, rng, self.crop_padding, self.horizontal_flip)
        if self.mixer is not None:
            return self.mixer(images, labels, (self.seed, self.epoch, step))
        return images, labels.reshape(-1, 1)

    @property
    def train_acc_name(self) -> str:
        """What hapi's accuracy on these batches measures, for progress lines.

        Returns:
            "acc", or "acc (dominant label)" when batches are mixed (Accuracy takes the target's argmax).
        """
        return "acc (dominant label)" if self.mixer is not None and self.mixer.mixes else "acc"


def augment_batch(images: np.ndarray, rng: np.random.Generator, padding: int, flip: bool) -> np.ndarray:
    """Random crop with zero padding and horizontal flip, per sample, on a whole batch.

    Padding is with 0 in normalised units, i.e. the mean colour.

    Args:
        images: (B, C, H, W) normalised batch.
        rng: generator for this epoch.
        padding: pixels of padding on each side before cropping back to H x W (0: no crop).
        flip: flip each image left-right with probability 1/2.
    Returns:
        The augmented batch (a new array).
    """
    b, _, h, w = images.shape
    if padding:
        padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        dy, dx = rng.integers(0, 2 * padding + 1, size=(2, b))
        images = np.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    if flip:
        mask = rng.random(b) < 0.5
        images = images.copy()
        images[mask] = images[mask, :, :, ::-1]
    return images
