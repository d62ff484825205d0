"""Label smoothing, mixup, cutmix and random erasing (issue 14, item 3): the batches, the loss, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml

from paddle_cnn import mixing
from paddle_cnn.cli import main
from paddle_cnn.config import RandomErasingConfig, build_config
from paddle_cnn.data import BatchLoader, Split
from paddle_cnn.distributed import GlobalMeanLoss
from paddle_cnn.engine import make_loaders
from paddle_cnn.errors import ConfigError
from paddle_cnn.evaluate import evaluate_run

from conftest import tiny_config

TIMING = {"epoch_seconds", "train_seconds", "images_per_s", "elapsed_seconds"}
EVERYTHING = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "random_erasing": {"prob": 0.5}}


def _constant_split(n: int = 10, side: int = 16) -> Split:
    """Image i is the constant i + 1 with label i % 10: every pixel says which image it came from."""
    images = np.broadcast_to(np.arange(1, n + 1, dtype="float32").reshape(n, 1, 1, 1), (n, 2, side, side)).copy()
    return Split(images, np.arange(n, dtype="int64") % 10)


def _mixer(**kwargs) -> mixing.BatchMixer:
    return mixing.BatchMixer(num_classes=10, **kwargs)


def _batches(loader: BatchLoader, epoch: int) -> list:
    loader.set_epoch(epoch)
    return list(loader)


# ----------------------------------------------------------------------------- the batches


def test_mixed_batches_are_reproducible_per_seed_epoch_and_step():
    split = _constant_split(40)
    make = lambda seed: BatchLoader(split, 10, shuffle=True, seed=seed, crop_padding=2, horizontal_flip=True,  # noqa: E731
                                    mixer=_mixer(mixup_alpha=0.4, cutmix_alpha=1.0, label_smoothing=0.1,
                                                 erasing=RandomErasingConfig(prob=0.5)))
    first, again = _batches(make(3), 1), _batches(make(3), 1)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert first[0][1].dtype == np.float32 and first[0][1].shape == (10, 10)
    for other in (_batches(make(3), 2), _batches(make(4), 1)):  # another epoch, another seed
        assert not np.array_equal(other[0][0], first[0][0])
    # Keyed by step: the same images under the keys of two steps mix differently, one key twice alike.
    mixer, images, labels = make(3).mixer, split.images[:10], split.labels[:10]
    a, b, c = (mixer(images, labels, key) for key in ((3, 1, 0), (3, 1, 0), (3, 1, 1)))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    np.testing.assert_array_equal(images, split.images[:10])  # the split itself is never written


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cutmix_targets_are_the_pasted_pixel_fractions_and_sum_to_1(smoothing):
    split, mixer = _constant_split(), _mixer(cutmix_alpha=1.0, label_smoothing=smoothing)
    seen_partial = 0
    for step in range(20):
        images, targets = mixer(split.images, split.labels, (0, 0, step))
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=0, atol=1e-6)
        for i in range(10):
            partner = 9 - i  # the reversed batch
            from_partner = float(np.mean(images[i] == partner + 1))
            assert np.all((images[i] == i + 1) | (images[i] == partner + 1))
            # With smoothing each label's weight is lam * (1 - eps) + eps / K.
            expected = from_partner * (1 - smoothing) + smoothing / 10
            assert targets[i, partner] == pytest.approx(expected, abs=1e-6), (step, i)
            seen_partial += 0 < from_partner < 1
    assert seen_partial >= 100  # boxes were really pasted


def test_mixup_blends_pixels_with_the_target_weights():
    split, mixer = _constant_split(), _mixer(mixup_alpha=1.0)
    for step in range(5):
        images, targets = mixer(split.images, split.labels, (0, 0, step))
        for i in range(10):
            lam = targets[i, i]
            assert targets[i, 9 - i] == pytest.approx(1 - lam, abs=1e-6)
            np.testing.assert_allclose(images[i], lam * (i + 1) + (1 - lam) * (10 - i), rtol=1e-5)
        assert 0 < targets[0, 0] < 1


def test_mix_prob_leaves_some_batches_unmixed_and_smoothing_alone_only_smooths():
    split = _constant_split()
    mixed = [not np.array_equal(_mixer(mixup_alpha=1.0, mix_prob=0.5)(split.images, split.labels, (0, 0, s))[0],
                                split.images) for s in range(40)]
    assert 5 < sum(mixed) < 35
    images, targets = _mixer(label_smoothing=0.2)(split.images, split.labels, (0, 0, 0))
    np.testing.assert_array_equal(images, split.images)
    np.testing.assert_allclose(targets[np.arange(10), np.arange(10)], 1 - 0.2 + 0.02, rtol=1e-6)
    assert targets[0, 1] == pytest.approx(0.02)


@pytest.mark.parametrize("mode", ["const", "pixel"])
def test_random_erasing_puts_one_rectangle_of_the_configured_area_in_each_chosen_image(mode):
    split = _constant_split(10, side=28)
    erasing = RandomErasingConfig(prob=1.0, area=[0.05, 0.2], mode=mode)
    images, labels = _mixer(erasing=erasing)(split.images, split.labels, (0, 0, 0))
    assert labels.dtype == np.int64 and labels.shape == (10, 1)  # erasing alone keeps int labels
    for i in range(10):
        rows, cols = np.nonzero((images[i] != i + 1).any(axis=0))
        area = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        assert len(rows) == area  # one solid rectangle
        assert 0.04 <= area / 28 ** 2 <= 0.23  # in the range, up to rounding of the sides
        patch = images[i][:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert np.all(patch == 0) if mode == "const" else patch.std() > 0.5
    half = _mixer(erasing=RandomErasingConfig(prob=0.5))(_constant_split(200).images, np.zeros(200, "int64"),
                                                         (0, 0, 0))[0]
    assert 60 < sum((half[i] == 0).any() for i in range(200)) < 140


@pytest.mark.parametrize("n,batch,world", [(100, 45, 2), (7, 7, 2)])
def test_rank_slices_of_a_mixed_global_batch_make_the_single_process_batch(n, batch, world):
    split = Split(np.random.default_rng(0).normal(size=(n, 1, 8, 8)).astype("float32"), np.arange(n) % 10)
    mixer = _mixer(mixup_alpha=0.4, cutmix_alpha=1.0, label_smoothing=0.1, erasing=RandomErasingConfig(prob=0.5))
    loaders = [BatchLoader(split, batch, shuffle=True, seed=1, mixer=mixer, rank=r, world=w)
               for r, w in [(0, 1)] + [(r, world) for r in range(world)]]
    for whole, *parts in zip(*(_batches(loader, 2) for loader in loaders), strict=True):
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[0])
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[1])


def test_dev_and_test_batches_are_never_mixed(data_root):
    cfg = build_config(tiny_config(data_root, data={"augment": EVERYTHING, "train_size": 100},
                                   loss={"label_smoothing": 0.1}))
    rng = np.random.default_rng(0)
    splits = {name: Split(rng.normal(size=(60, 1, 28, 28)).astype("float32"), np.arange(60) % 10)
              for name in ("train", "dev", "test")}
    loaders = make_loaders(cfg, splits)
    for name in ("dev", "test"):
        for images, labels in loaders[name]:
            assert labels.dtype == np.int64 and labels.shape[1] == 1
            np.testing.assert_array_equal(images, splits[name].images[:len(images)])
            np.testing.assert_array_equal(labels[:, 0], splits[name].labels[:len(images)])
    images, targets = next(iter(loaders["train"]))
    assert targets.dtype == np.float32 and targets.shape == (50, 10)
    assert loaders["train"].train_acc_name == "acc (dominant label)" and loaders["dev"].train_acc_name == "acc"


# ----------------------------------------------------------------------------- the loss


def test_the_loss_is_plain_cross_entropy_on_labels_and_soft_on_targets():
    rng = np.random.default_rng(0)
    logits = paddle.to_tensor(rng.normal(size=(6, 10)).astype("float32"))
    labels = rng.integers(0, 10, size=(6, 1))
    plain = paddle.nn.CrossEntropyLoss()(logits, paddle.to_tensor(labels))
    assert float(mixing.CrossEntropy()(logits, paddle.to_tensor(labels))) == float(plain)
    smoothed = mixing.soft_targets(labels[:, 0], 10, 1.0, 0.1)
    # Paddle's own label smoothing (it needs (B,) labels: (B, 1) int64 has no CPU kernel in 3.3.1).
    reference = paddle.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, paddle.to_tensor(labels[:, 0]))
    assert float(mixing.CrossEntropy()(logits, paddle.to_tensor(smoothed))) == pytest.approx(float(reference), 1e-6)
    with paddle.no_grad():  # the data-parallel loss takes soft targets too (its evaluation path needs no launcher)
        assert float(GlobalMeanLoss(2)(logits, paddle.to_tensor(smoothed))) == pytest.approx(float(reference), 1e-6)


def _train(tmp_path: Path, data_root: Path, name: str, *overrides: str, **sections) -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data_root, **sections)))
    out = tmp_path / name
    assert main(["train", str(config), "--output-dir", str(out), *overrides]) == 0
    return out


def _rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def test_label_smoothing_changes_the_training_loss_but_not_how_dev_loss_is_computed(tmp_path, data_root):
    plain = _train(tmp_path, data_root, "plain", train={"epochs": 1})
    smooth = _train(tmp_path, data_root, "smooth", train={"epochs": 1}, loss={"label_smoothing": 0.2})
    assert _rows(smooth)[0]["train_loss"] != _rows(plain)[0]["train_loss"]
    # The dev loss recorded in training is the plain cross-entropy an evaluation-only model computes
    # (paddle.nn.CrossEntropyLoss, no smoothing) on the same weights (1 epoch: best = last).
    assert evaluate_run(smooth, "dev")["loss"] == pytest.approx(_rows(smooth)[0]["dev_loss"], rel=1e-6)
    assert yaml.safe_load((smooth / "config.yaml").read_text())["loss"] == {"label_smoothing": 0.2}


def test_a_mixed_run_interrupted_and_resumed_equals_the_uninterrupted_run(tmp_path, data_root, capsys, monkeypatch):
    sections = {"data": {"train_size": 200, "augment": {**EVERYTHING, "crop_padding": 2, "mix_prob": 0.8}},
                "optimizer": {"lr": 0.002}, "loss": {"label_smoothing": 0.1}, "train": {"epochs": 3}}
    reference = _train(tmp_path, data_root, "reference", **sections)
    config = tmp_path / "reference.yaml"
    out = tmp_path / "resumed"
    original = BatchLoader.__iter__

    def interrupted(self):  # Ctrl-C in the middle of epoch 2
        for i, item in enumerate(original(self)):
            if self.shuffle and self.epoch == 1 and i == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(BatchLoader, "__iter__", interrupted)
    assert main(["train", str(config), "--output-dir", str(out)]) == 130
    assert len(_rows(out)) == 1
    monkeypatch.setattr(BatchLoader, "__iter__", original)
    assert main(["train", "--resume", str(out)]) == 0
    assert _rows(out) == _rows(reference)  # floats compared with ==: bit-identical
    best, ref = (paddle.load(str(d / "checkpoints" / "best.pdparams")) for d in (out, reference))
    assert all(np.array_equal(best[k].numpy(), ref[k].numpy()) for k in ref)
    got, want = (json.loads((d / "results.json").read_text()) for d in (out, reference))
    assert (got["test_loss"], got["best_epoch"]) == (want["test_loss"], want["best_epoch"])
    assert "acc (dominant label)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("override, words", [
    ("loss.label_smoothing=1.0", ["loss.label_smoothing", "less than 1.0"]),
    ("loss.label_smoothing=-0.1", ["loss.label_smoothing", "below the minimum"]),
    ("loss.smoothing=0.1", ["unknown key 'loss.smoothing'", "did you mean 'label_smoothing'"]),
    ("data.augment.mixup=0.2", ["unknown key 'data.augment.mixup'", "did you mean 'mixup_alpha'"]),
    ("data.augment.mixup_alpha=-1", ["data.augment.mixup_alpha", "below the minimum"]),
    ("data.augment.cutmix_alpha=.nan", ["data.augment.cutmix_alpha", "not a finite number"]),
    ("data.augment.mix_prob=1.5", ["data.augment.mix_prob", "above the maximum"]),
    ("data.augment.switch_prob=-0.5", ["data.augment.switch_prob", "below the minimum"]),
    ("data.augment.random_erasing.probb=0.1", ["random_erasing.probb", "did you mean 'prob'"]),
    ("data.augment.random_erasing.prob=2", ["random_erasing.prob", "above the maximum"]),
    ("data.augment.random_erasing=0.25", ["data.augment.random_erasing", "expected a mapping"]),
    ("data.augment.random_erasing.area=[0.3, 0.1]", ["random_erasing.area", "0.0 < lo <= hi < 1.0", "[0.3, 0.1]"]),
    ("data.augment.random_erasing.area=[0, 0.3]", ["random_erasing.area", "fractions of the image"]),
    ("data.augment.random_erasing.area=[0.1, 1]", ["random_erasing.area", "[0.1, 1.0]"]),
    ("data.augment.random_erasing.area=[0.1]", ["random_erasing.area", "[lo, hi]"]),
    ("data.augment.random_erasing.aspect=[0, 2]", ["random_erasing.aspect", "0.0 < lo <= hi"]),
    ("data.augment.random_erasing.mode=zero", ["random_erasing.mode", "'const', 'pixel'"]),
])
def test_bad_values_are_one_paragraph_errors_before_anything_runs(write_config, tmp_path, capsys, override, words):
    out = tmp_path / "out"
    code = main(["train", str(write_config()), "--output-dir", str(out), "-o", override])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not out.exists(), err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"


@pytest.mark.parametrize("alpha", ["mixup_alpha", "cutmix_alpha"])
def test_mixing_with_a_batch_of_one_is_refused(data_root, alpha):
    with pytest.raises(ConfigError, match=r"train.batch_size = 1 would mix every image with itself"):
        build_config(tiny_config(data_root, data={"augment": {alpha: 0.2}}, train={"batch_size": 1}))
    # Without mixing a batch of 1 stays allowed, and so does smoothing or erasing.
    build_config(tiny_config(data_root, data={"augment": {alpha: 0.2, "mix_prob": 0.0,
                                                          "random_erasing": {"prob": 0.5}}},
                             loss={"label_smoothing": 0.1}, train={"batch_size": 1}))
