"""Shared fixtures: the runtime set-up before paddle loads, and tiny real-format datasets.

The datasets are written in the real file formats (MNIST idx.gz, CIFAR-10 python tar.gz) and read
through the real paddle.vision.datasets classes by the code under test. Images carry a learnable
signal (a bright square whose position encodes the label), so a few steps of training move
accuracy above chance.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from paddle_cnn import runtime

# Before any test module imports paddle (conftest is imported first).
runtime.setup()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def synthetic_images(n: int, size: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise images with a bright square at a label-dependent position.

    Args:
        n: number of images.
        size: height and width.
        channels: 1 or 3.
        seed: RNG seed.
    Returns:
        (uint8 images (n, size, size, channels), labels (n,)).
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, size, size, channels)).astype(np.uint8)
    cell = size // 4
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 4)
        images[i, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell, :] = 230
    return images, labels


def write_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write MNIST idx.gz files (counts must be multiples of 100 for paddle's reader).

    Args:
        root: data root; files go to root/mnist/.
        n_train: training images.
        n_test: test images.
        seed: RNG seed.
    Returns:
        The mnist folder.
    """
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = synthetic_images(n, 28, 1, s)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())
    return folder


def write_cifar(root: Path, per_batch: int = 40, n_test: int = 100, seed: int = 0) -> Path:
    """Write a CIFAR-10 python archive with data_batch_1..5 and test_batch.

    Args:
        root: data root; the archive is root/cifar-10-python.tar.gz.
        per_batch: images per training batch file.
        n_test: test images.
        seed: RNG seed.
    Returns:
        The archive path.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cifar-10-python.tar.gz"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate(names):
            images, labels = synthetic_images(n_test if name == "test_batch" else per_batch, 32, 3, seed + i)
            data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CIFAR rows are CHW
            blob = pickle.dumps({b"data": data, b"labels": labels.tolist()})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root holding tiny MNIST and CIFAR-10 in their real formats."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_cifar(root)
    return root


def tiny_config(data_root: Path, **sections) -> dict:
    """A fast training config on the tiny data (a few seconds), as plain data.

    Args:
        data_root: the fixture's data root.
        **sections: section dicts merged over the defaults.
    Returns:
        Nested config dict.
    """
    cfg = {
        "data": {"name": "mnist", "root": str(data_root), "dev_size": 100, "test_size": 100},
        "model": {"name": "lenet", "in_channels": 1},
        "optimizer": {"name": "momentum", "lr": 0.05},
        "train": {"epochs": 2, "batch_size": 50, "eval_batch_size": 100, "seed": 0, "log_every": 5},
        "runtime": {"device": "cpu"},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


@pytest.fixture
def write_config(tmp_path, data_root):
    """Write a tiny config file; returns a function (name, **sections) -> path."""

    def _write(name: str = "tiny", **sections) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tiny_config(data_root, **sections)))
        return path

    return _write


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None):
    """Run `python -m paddle_cnn ARGS` in a subprocess.

    Args:
        *args: command-line arguments.
        env: extra environment variables.
        timeout: seconds before the test fails.
        cwd: working directory.
    Returns:
        subprocess.CompletedProcess with text stdout/stderr.
    """
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "paddle_cnn", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def _default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def popen(cmd: list[str], **kwargs) -> subprocess.Popen:
    """subprocess.Popen for a child that a test will send SIGINT, SIGTERM or SIGHUP to.

    A suite started in the background from a non-interactive shell inherits SIGINT as ignored
    (and under `nohup`, SIGHUP too), and a Python child then installs no KeyboardInterrupt
    handler: the test's Ctrl-C would be lost. The child gets the default dispositions back, as
    it would have in a terminal; the product itself rightly keeps an inherited ignore.

    Args:
        cmd: the command.
        **kwargs: passed to subprocess.Popen.
    Returns:
        The started process.
    """
    return subprocess.Popen(cmd, preexec_fn=_default_signals, **kwargs)
