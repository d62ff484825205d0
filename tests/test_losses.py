"""loss.label_smoothing: the smoothed training loss, and dev/test losses that stay plain."""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_cnn.config import build_config
from paddle_cnn.engine import prepare_model
from paddle_cnn.errors import ConfigError
from paddle_cnn.losses import cross_entropy_sum
from paddle_cnn.network import build_network

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(0, 3, (8, 10)).astype("float32")
LABELS = RNG.integers(0, 10, (8, 1)).astype("int64")


def _smoothed_reference(eps: float) -> float:
    """Cross-entropy against the soft target (1 - eps) * one_hot + eps / K, in float64."""
    logits = LOGITS.astype("float64")
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    target = np.full(logits.shape, eps / 10)
    target[np.arange(8), LABELS[:, 0]] += 1 - eps
    return float(-(target * logp).sum())


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_training_loss_is_cross_entropy_against_the_smoothed_target(eps):
    got = float(cross_entropy_sum(paddle.to_tensor(LOGITS), paddle.to_tensor(LABELS), eps))
    assert got == pytest.approx(_smoothed_reference(eps), rel=1e-5)


def test_without_gradients_the_loss_is_plain_cross_entropy():
    with paddle.no_grad():
        got = float(cross_entropy_sum(paddle.to_tensor(LOGITS), paddle.to_tensor(LABELS), 0.3))
    assert got == pytest.approx(_smoothed_reference(0.0), rel=1e-5)
    assert got != pytest.approx(_smoothed_reference(0.3), rel=1e-3)


def test_prepared_model_smooths_training_batches_only():
    cfg = build_config({"model": {"name": "lenet"}, "optimizer": {"name": "sgd", "lr": 1e-12},
                        "loss": {"label_smoothing": 0.2}})
    model = prepare_model(cfg, build_network(cfg), (1, 28, 28), steps_per_epoch=1)
    x = paddle.to_tensor(RNG.normal(0, 1, (8, 1, 28, 28)).astype("float32"))
    y = paddle.to_tensor(LABELS)
    with paddle.no_grad():
        logits = model.network(x)
    plain = float(F.cross_entropy(logits, y))
    train_loss = float(np.ravel(model.train_batch([x.numpy()], [LABELS])[0])[0])  # lr 1e-12: weights do not move
    eval_loss = float(np.ravel(model.eval_batch([x.numpy()], [LABELS])[0])[0])
    assert eval_loss == pytest.approx(plain, rel=1e-5)
    assert abs(train_loss - plain) > 1e-3


@pytest.mark.parametrize("value", [-0.1, 1.0, "x"])
def test_bad_label_smoothing_is_refused(value):
    with pytest.raises(ConfigError, match="loss.label_smoothing"):
        build_config({"loss": {"label_smoothing": value}})
