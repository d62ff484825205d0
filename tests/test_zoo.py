"""The classic 32x32 architectures: alexnet, vgg11, nin, googlenet."""

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from paddle_cnn.errors import ConfigError
from paddle_cnn.models.googlenet import Inception
from paddle_cnn.registry import build_model, model_names, model_options

# The classic 32x32 architectures are the registered models with a width multiplier.
ZOO = [name for name in model_names() if "width" in model_options(name)]


def _param_count(net: nn.Layer) -> int:
    return sum(int(np.prod(p.shape)) for p in net.parameters())


def test_zoo_models_are_registered():
    assert {"alexnet", "vgg11", "nin", "googlenet"} <= set(ZOO)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", ZOO)
def test_output_shape_at_32(name, in_channels):
    # 7 classes rather than the default 10, so an ignored num_classes shows up.
    net = build_model(name, num_classes=7, in_channels=in_channels)
    net.eval()
    out = net(paddle.randn([2, in_channels, 32, 32]))
    assert list(out.shape) == [2, 7]


@pytest.mark.parametrize("name", ZOO)
def test_28x28_input_works(name):
    net = build_model(name, in_channels=1, width=0.25)
    net.eval()
    assert list(net(paddle.randn([2, 1, 28, 28])).shape) == [2, 10]


@pytest.mark.parametrize("name", ["alexnet", "vgg11"])
def test_dense_head_models_reject_other_sizes_clearly(name):
    net = build_model(name, width=0.25)
    with pytest.raises(ConfigError, match="Resize the images to 32x32"):
        net(paddle.randn([1, 3, 64, 64]))


@pytest.mark.parametrize("name", ZOO)
def test_half_width_has_fewer_parameters(name):
    assert _param_count(build_model(name, width=0.5)) < _param_count(build_model(name, width=1.0))


@pytest.mark.parametrize("name", ZOO)
def test_dropout_zero_makes_train_forward_deterministic(name):
    net = build_model(name, width=0.25, dropout=0.0)
    net.train()
    x = paddle.randn([2, 3, 32, 32])
    np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())


@pytest.mark.parametrize("name", ZOO)
def test_dropout_rate_is_applied_in_train_mode(name):
    # Counterpart of the test above: without it, a model that ignored `dropout` would pass.
    net = build_model(name, width=0.25, dropout=0.5)
    net.train()
    x = paddle.randn([2, 3, 32, 32])
    assert not np.array_equal(net(x).numpy(), net(x).numpy())


def test_nin_has_no_linear_layer():
    net = build_model("nin")
    assert not [layer for layer in net.sublayers() if isinstance(layer, nn.Linear)]


def test_inception_output_channels_are_sum_of_branches():
    block = Inception(12, 3, (4, 5), (2, 6), 7)
    out = block(paddle.randn([2, 12, 9, 9]))
    assert block.out_channels == 3 + 5 + 6 + 7
    assert list(out.shape) == [2, 21, 9, 9]


def test_vgg_batch_norm_flag():
    plain, bn = build_model("vgg11", width=0.25), build_model("vgg11", width=0.25, batch_norm=True)
    bn_layers = [layer for layer in bn.sublayers() if isinstance(layer, nn.BatchNorm2D)]
    assert len(bn_layers) == 8  # one per conv of VGG-11
    assert not [layer for layer in plain.sublayers() if isinstance(layer, nn.BatchNorm2D)]
    assert all(c.bias is None for c in bn.sublayers() if isinstance(c, nn.Conv2D))


@pytest.mark.parametrize("option", [{"width": 0}, {"width": -1.0}, {"dropout": 1.0}, {"dropout": -0.1}])
@pytest.mark.parametrize("name", ZOO)
def test_bad_width_or_dropout_is_a_config_error(name, option):
    with pytest.raises(ConfigError, match=f"model.{next(iter(option))}"):
        build_model(name, **option)
