"""optimizer.grad_clip_norm: the global gradient norm is capped, and the cap is validated."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddle_cnn.config import build_config
from paddle_cnn.errors import ConfigError
from paddle_cnn.network import build_network
from paddle_cnn.optim import build_optimizer


def _update_norm(clip: float | None) -> float:
    """Global L2 norm of one plain-SGD update of LeNet on a batch of large inputs."""
    cfg = build_config({"model": {"name": "lenet"}, "optimizer": {"name": "sgd", "lr": 1.0, "grad_clip_norm": clip}})
    net = build_network(cfg)
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    opt = build_optimizer(cfg, net.parameters(), steps_per_epoch=1)
    x = paddle.to_tensor(np.random.default_rng(0).normal(0, 30, (16, 1, 28, 28)).astype("float32"))
    loss = paddle.nn.functional.cross_entropy(net(x), paddle.zeros([16, 1], "int64"))
    loss.backward()
    opt.step()
    return float(np.sqrt(sum(((v.numpy() - before[k]) ** 2).sum() for k, v in net.state_dict().items())))


def test_clipping_caps_the_update_at_lr_times_the_norm():
    free = _update_norm(None)
    assert free > 1.0  # the batch is chosen so that a cap of 0.5 has something to clip
    # SGD with lr 1: the update is the (clipped) gradient, whose global norm is then 0.5.
    assert _update_norm(0.5) == pytest.approx(0.5, rel=1e-4)
    assert _update_norm(10 * free) == pytest.approx(free, rel=1e-6)  # a cap above the norm changes nothing


@pytest.mark.parametrize("value", [0, -1.0, "big"])
def test_bad_clip_norm_is_refused(value):
    with pytest.raises(ConfigError, match="optimizer.grad_clip_norm"):
        build_config({"optimizer": {"grad_clip_norm": value}})
