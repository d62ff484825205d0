"""`paddle-cnn predict` (dataset grid and image files) and the confusion report, on tiny runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from paddle_cnn.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SAMPLE_LINE = re.compile(r"^\s*(\d+)\s+true (\S+)\s+pred (\S+)\s+p=([\d.]+)(\s+WRONG)?$")
TOP3 = re.compile(r"(\d)\. (\S+) p=([\d.]+)")


def _train(tmp_path_factory, data_root, name: str, *overrides: str, **sections) -> Path:
    """Train a tiny run through the CLI; returns its run directory."""
    from conftest import tiny_config

    tmp = tmp_path_factory.mktemp(name)
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data_root, **sections)))
    run_dir = tmp / "out"
    assert main(["train", str(config), "--output-dir", str(run_dir), *overrides]) == 0
    return run_dir


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, data_root):
    """One tiny MNIST run, deliberately under-trained (1 epoch, small lr) so that it makes mistakes."""
    return _train(tmp_path_factory, data_root, "mnist", "-o", "train.epochs=1", "-o", "optimizer.lr=0.001")


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory, data_root):
    """One tiny colour run (1 epoch), to check grey files become RGB input."""
    return _train(tmp_path_factory, data_root, "cifar", "-o", "train.epochs=1",
                  data={"name": "cifar10", "dev_size": 40, "dev_split": "tail", "test_size": 50},
                  model={"name": "lenet5", "in_channels": 3})


@pytest.fixture
def user_images(tmp_path):
    """A grey 50x40 PNG (dark background) and a colour 100x80 JPG (light background)."""
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 60, size=(40, 50)).astype(np.uint8)
    grey[2:12, 14:26] = 230
    colour = np.full((80, 100, 3), (230, 220, 200), dtype=np.uint8)
    colour[30:60, 20:45] = (20, 40, 90)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    Image.fromarray(colour, "RGB").save(tmp_path / "colour.jpg", quality=95)
    return tmp_path / "grey.png", tmp_path / "colour.jpg"


def _independent_probs(run_dir: Path, path: Path) -> np.ndarray:
    """Softmax of the network on one file, resized with PIL directly (not through predict.py)."""
    from paddle_cnn.config import load_config
    from paddle_cnn.data import preprocess
    from paddle_cnn.registry import build_model

    cfg = load_config(run_dir / "config.yaml")
    mode, size = ("L", 28) if cfg.data.name == "mnist" else ("RGB", 32)
    bands = Image.open(path).convert(mode).split()
    pixels = np.stack([np.asarray(b.convert("F").resize((size, size), Image.BILINEAR)) for b in bands], axis=-1)
    x = preprocess(pixels[None], cfg.data, cfg.model.in_channels)
    net = build_model(cfg.model.name, **cfg.model.options())
    net.set_state_dict(paddle.load(str(run_dir / "checkpoints" / "best.pdparams")))
    net.eval()
    with paddle.no_grad():
        logits = net(paddle.to_tensor(x)).numpy()[0]
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _top3_lines(out: str) -> dict[str, list[tuple[str, float]]]:
    """File name -> [(class, p)] from the top-3 lines of `predict --images`."""
    result = {}
    for line in out.splitlines():
        if not line.startswith(" ") and TOP3.search(line):
            result[Path(line.split(" (")[0]).name] = [(c, float(p)) for _, c, p in TOP3.findall(line)]
    return result


def test_dataset_samples_give_one_line_each_and_a_png(mnist_run, capsys):
    assert main(["predict", str(mnist_run), "--count", "12"]) == 0
    out = capsys.readouterr().out
    lines = [SAMPLE_LINE.match(line) for line in out.splitlines() if SAMPLE_LINE.match(line)]
    assert [int(m.group(1)) for m in lines] == list(range(12))
    for m in lines:
        assert 0 <= float(m.group(4)) <= 1
        assert bool(m.group(5)) == (m.group(2) != m.group(3))
    wrong = sum(bool(m.group(5)) for m in lines)
    assert wrong > 0, "the under-trained run should make mistakes, or the red marking is untested"
    assert f"({12 - wrong}/12)" in out
    png = mnist_run / "predictions.png"
    assert str(png) in out and png.read_bytes()[:8] == PNG_MAGIC
    with Image.open(png) as img:
        assert img.width > 400 and img.height > 400


def test_grid_pixels_are_the_dataset_pixels(mnist_run):
    """De-normalising the model input must give back the raw images (what the grid draws)."""
    from paddle_cnn.data import dataset_stats, to_pixels
    from paddle_cnn.evaluate import load_run

    from conftest import synthetic_images

    cfg, loaders, _ = load_run(mnist_run)
    raw, labels = synthetic_images(200, 28, 1, seed=1)  # conftest.write_mnist's test images
    pixels = to_pixels(loaders["test"].split.images, *dataset_stats(cfg.data, 1))
    assert pixels.shape == (100, 28, 28, 1) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - raw[:100].astype(int)).max() <= 1
    assert (loaders["test"].split.labels == labels[:100]).all()


def test_count_beyond_the_split_and_below_one(mnist_run, capsys):
    assert main(["predict", str(mnist_run), "--count", "500"]) == 0
    out = capsys.readouterr().out
    assert "only 100 samples" in out and sum(bool(SAMPLE_LINE.match(x)) for x in out.splitlines()) == 100
    assert main(["predict", str(mnist_run), "--count", "0"]) == 2
    assert "--count" in capsys.readouterr().err


def test_image_files_top3_match_an_independent_forward(mnist_run, user_images, capsys):
    grey, colour = user_images
    assert main(["predict", str(mnist_run), "--images", str(grey), str(colour)]) == 0
    out = capsys.readouterr().out
    top = _top3_lines(out)
    assert set(top) == {"grey.png", "colour.jpg"}
    for path in (grey, colour):
        ranked = top[path.name]
        probs = _independent_probs(mnist_run, path)
        assert len(ranked) == 3 and all(0 <= p <= 1 for _, p in ranked)
        assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
        assert ranked[0][0] == str(int(probs.argmax()))
        assert [p for _, p in ranked] == pytest.approx(sorted(probs)[::-1][:3], abs=2e-4)
    assert "50x40 -> 1x28x28" in out and "100x80 -> 1x28x28" in out
    # Only the light JPG gets the white-on-black note.
    notes = [i for i, line in enumerate(out.splitlines()) if "white digit on black" in line]
    assert len(notes) == 1 and "colour.jpg" in out.splitlines()[notes[0] - 1]


def test_grey_file_becomes_colour_input_for_a_colour_run(cifar_run, user_images, capsys):
    grey, _ = user_images
    assert main(["predict", str(cifar_run), "--images", str(grey)]) == 0
    out = capsys.readouterr().out
    ranked = _top3_lines(out)["grey.png"]
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert ranked[0][0] == names[int(_independent_probs(cifar_run, grey).argmax())]
    assert "50x40 -> 3x32x32" in out and "white digit on black" not in out


def _broken_files(tmp_path: Path, user_images) -> dict[str, Path]:
    """A text file named .png, a PNG cut in half, and a path that does not exist."""
    text = tmp_path / "notes.png"
    text.write_text("these are my notes, not a picture\n")
    data = user_images[0].read_bytes()
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(data[: len(data) // 2])
    return {"text": text, "truncated": truncated, "missing": tmp_path / "absent.jpg"}


@pytest.mark.parametrize("kind", ["text", "truncated", "missing"])
def test_unreadable_image_is_a_user_error(mnist_run, user_images, tmp_path, capsys, kind):
    bad = _broken_files(tmp_path, user_images)[kind]
    assert main(["predict", str(mnist_run), "--images", str(user_images[0]), str(bad)]) == 2
    captured = capsys.readouterr()
    assert bad.name in captured.err and "not a readable PNG/JPG" in captured.err
    assert "Traceback" not in captured.err
    assert "grey.png" not in captured.out  # every file is checked before anything is printed


def test_truncated_image_in_a_subprocess_has_no_traceback(mnist_run, user_images, tmp_path):
    from conftest import run_cli

    bad = _broken_files(tmp_path, user_images)["truncated"]
    proc = run_cli("predict", str(mnist_run), "--images", str(bad), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert "cut.png" in proc.stderr and "truncated" in proc.stderr and "Traceback" not in proc.stderr


def test_confusion_report_is_consistent_with_hapi(mnist_run, tmp_path):
    from paddle_cnn.evaluate import confusion_report, load_run
    from paddle_cnn.evaluate import output_names as class_names

    cfg, loaders, model = load_run(mnist_run)
    png = tmp_path / "confusion_matrix.png"
    report = confusion_report(model, loaders["test"], class_names(cfg), png, title="tiny")
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == report["samples"] == 100
    assert (matrix.sum(axis=1) == np.bincount(loaders["test"].split.labels, minlength=10)).all()  # rows = true
    assert np.trace(matrix) < 100, "the under-trained run should make mistakes"
    per_class = matrix.diagonal() / matrix.sum(axis=1)
    assert [report["per_class_acc"][str(i)] for i in range(10)] == pytest.approx(per_class.tolist())
    hapi_acc = model.evaluate(loaders["test"], verbose=0)["acc"]
    assert report["acc"] == pytest.approx(np.trace(matrix) / 100) == pytest.approx(float(hapi_acc))
    assert png.read_bytes()[:8] == PNG_MAGIC
