"""Every registered model: output shape, finite outputs, a gradient for every trainable parameter."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddle_cnn.registry import build_model, model_info, model_names, model_options
from paddle_cnn.report import model_report


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("in_channels", [1, 3])
def test_registered_model_trains_one_step(name, in_channels):
    paddle.seed(0)
    net = build_model(name, num_classes=7, in_channels=in_channels)
    net.train()
    size = model_info(name).input_size  # the classic LeNet pads to take 28x28, the others are built for 32
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(4, in_channels, size, size)).astype("float32"))
    out = net(x)
    assert out.shape == [4, 7]
    assert np.isfinite(out.numpy()).all()
    loss = paddle.nn.functional.cross_entropy(out, paddle.to_tensor([[0], [1], [2], [3]], dtype="int64"))
    loss.backward()
    # BatchNorm running statistics are parameters in paddle but not trainable: skip them.
    trainable = [(n, p) for n, p in net.named_parameters() if p.trainable]
    assert trainable
    for pname, param in trainable:
        assert param.grad is not None, f"{name}: {pname} got no gradient"
        assert np.isfinite(param.grad.numpy()).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("name", model_names())
def test_registered_model_takes_the_common_options(name):
    assert {"num_classes", "in_channels"} <= model_options(name)


@pytest.mark.parametrize("name, size", [("lenet5", 32), ("lenet", 28)])
def test_lenet_report_numbers_match_the_book(name, size):
    text, numbers = model_report(build_model(name), (1, size, size))
    # Derived by hand: conv1 6*1*5*5+6, conv3 16*6*5*5+16, conv5 120*16*5*5+120, fc6 84*120+84, fc7 10*84+10.
    assert numbers["trainable_params"] == 156 + 2416 + 48120 + 10164 + 850 == 61706
    assert numbers["macs"] == 423344
    assert "MACs" in text and "61,706" in text
