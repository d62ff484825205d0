"""Runs on the real MNIST / CIFAR-10 copies in ../shared/data (skipped where they are absent).

The cheap ones (seconds) run by default; the full-MNIST accuracy target is marked slow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from paddle_cnn.cli import main

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path | None:
    for candidate in (os.environ.get("PADDLE_CNN_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


DATA = _data_root()
needs_data = pytest.mark.skipif(DATA is None, reason="real datasets not found (set PADDLE_CNN_DATA or ../shared/data)")


def _train(config: str, out: Path, *overrides: str) -> dict:
    args = ["train", str(REPO / "configs" / config), "--output-dir", str(out), "-o", f"data.root={DATA}"]
    for o in overrides:
        args += ["-o", o]
    assert main(args) == 0
    return json.loads((out / "results.json").read_text())


@needs_data
def test_book_lenet_setup_beats_the_book_on_real_mnist(tmp_path):
    results = _train("book_5_3_lenet_mnist.yaml", tmp_path / "run")
    assert results["test_samples"] == 200 and results["train_samples"] == 1000
    assert results["test_acc"] > 0.87  # the book's published 87.0%


@needs_data
def test_resnet18_trains_on_real_cifar10(tmp_path):
    results = _train("book_5_5_resnet18_cifar10.yaml", tmp_path / "run", "train.epochs=1",
                     "data.train_size=512", "data.dev_size=256", "data.test_size=256")
    assert results["status"] == "finished" and results["test_samples"] == 256 and results["dev_samples"] == 256
    assert 0.0 <= results["test_acc"] <= 1.0


@needs_data
@pytest.mark.slow
def test_lenet_mnist_reaches_99_percent(tmp_path):
    results = _train("lenet_mnist.yaml", tmp_path / "run")
    assert results["test_samples"] == 10000
    assert results["test_acc"] >= 0.99
