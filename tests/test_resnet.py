"""ResNet18 with and without residual connections: paddle.vision equivalence, sizes, shapes, errors."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddle_cnn.errors import ConfigError
from paddle_cnn.models.resnet import PADDLE_VISION_NAME_MAP, BasicBlock
from paddle_cnn.registry import build_model


def _to_local_name(paddle_vision_key: str) -> str:
    """Map a paddle.vision.models.resnet18 state-dict key to this project's key.

    Args:
        paddle_vision_key: key such as "conv1.weight" or "layer2.0.downsample.0.weight".
    Returns:
        The key in resnet18 (only the stem's prefix changes).
    """
    for old, new in PADDLE_VISION_NAME_MAP.items():
        if paddle_vision_key.startswith(old):
            return new + paddle_vision_key[len(old):]
    return paddle_vision_key


def _randomize_batchnorm(model: paddle.nn.Layer, seed: int) -> None:
    """Give every BN non-default affine params and running stats, so eval-mode BN is not identity.

    Args:
        model: network whose BatchNorm2D layers are changed in place.
        seed: numpy seed.
    """
    rng = np.random.default_rng(seed)
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            c = layer.weight.shape[0]
            layer.weight.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.bias.set_value(rng.normal(0, 0.1, c).astype("float32"))
            layer._mean.set_value(rng.normal(0, 0.1, c).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))


def test_matches_paddle_vision_resnet18_after_copying_weights_by_name():
    paddle.seed(0)
    reference = paddle.vision.models.resnet18(num_classes=10)  # pretrained=False by default
    _randomize_batchnorm(reference, seed=0)
    ours = build_model("resnet18", num_classes=10, in_channels=3, use_residual=True,
                       stem="imagenet")
    mapped = {_to_local_name(k): v for k, v in reference.state_dict().items()}
    ours_keys = set(ours.state_dict())
    assert set(mapped) == ours_keys, (sorted(ours_keys - set(mapped)), sorted(set(mapped) - ours_keys))
    for key, target in ours.state_dict().items():
        assert target.shape == mapped[key].shape, key
    ours.set_state_dict(mapped)
    for key, target in ours.state_dict().items():
        np.testing.assert_array_equal(target.numpy(), mapped[key].numpy(), err_msg=key)

    reference.eval()
    ours.eval()
    x = paddle.randn([2, 3, 64, 64])
    diff = np.abs(ours(x).numpy() - reference(x).numpy()).max()
    assert diff < 1e-5


# Trainable parameter counts derived by hand. A conv (bias_attr=False) has c_in*c_out*k*k weights;
# a BN has 2*c trainable params (gamma, beta). paddle's BN also keeps running mean and variance
# (2*c more) as non-trainable parameters: model.parameters() and paddle.summary's "Total params"
# include them, so the counts below are compared against the TRAINABLE parameters only
# (paddle.summary's "Trainable params").
def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k


def _bn(c: int) -> int:
    return 2 * c


def _basic_block(c_in: int, c_out: int) -> int:
    return _conv(c_in, c_out, 3) + _bn(c_out) + _conv(c_out, c_out, 3) + _bn(c_out)


def _projection(c_in: int, c_out: int) -> int:
    return _conv(c_in, c_out, 1) + _bn(c_out)


def _expected_trainable(stem: str, in_channels: int, use_residual: bool, classes: int = 10) -> int:
    stem_kernel = 7 if stem == "imagenet" else 3
    total = _conv(in_channels, 64, stem_kernel) + _bn(64)
    total += 2 * _basic_block(64, 64)
    for c_in, c_out in [(64, 128), (128, 256), (256, 512)]:
        total += _basic_block(c_in, c_out) + _basic_block(c_out, c_out)
        if use_residual:
            total += _projection(c_in, c_out)
    return total + 512 * classes + classes


def _trainable(model: paddle.nn.Layer) -> int:
    return sum(int(np.prod(p.shape)) for p in model.parameters() if p.trainable)


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("use_residual", [True, False])
def test_trainable_parameter_count_matches_hand_arithmetic(stem, in_channels, use_residual):
    model = build_model("resnet18", in_channels=in_channels, use_residual=use_residual, stem=stem)
    assert _trainable(model) == _expected_trainable(stem, in_channels, use_residual)
    bn_channels = sum(layer.weight.shape[0] for layer in model.sublayers()
                      if isinstance(layer, paddle.nn.BatchNorm2D))
    all_params = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert all_params == _expected_trainable(stem, in_channels, use_residual) + 2 * bn_channels


def test_trainable_count_anchors():
    # paddle.summary(paddle.vision.models.resnet18(num_classes=10)) reports 11,181,642 trainable.
    assert _expected_trainable("imagenet", 3, True) == 11_181_642
    assert _trainable(paddle.vision.models.resnet18(num_classes=10)) == 11_181_642
    # The three projections: 64*128+2*128 + 128*256+2*256 + 256*512+2*512 = 173,824.
    assert _expected_trainable("imagenet", 3, False) == 11_181_642 - 173_824


def test_plain_variant_lacks_exactly_the_three_projection_shortcuts():
    residual = build_model("resnet18", num_classes=10)
    plain = build_model("resnet18_plain", num_classes=10)
    residual_keys, plain_keys = set(residual.state_dict()), set(plain.state_dict())
    assert plain_keys < residual_keys
    prefixes = {k.split(".downsample.")[0] for k in residual_keys - plain_keys}
    assert prefixes == {"layer2.0", "layer3.0", "layer4.0"}
    assert all(".downsample." in k for k in residual_keys - plain_keys)
    assert _trainable(residual) - _trainable(plain) == 173_824
    assert not [n for n, _ in plain.named_sublayers() if "downsample" in n]


def _zero_second_bn(block: BasicBlock) -> None:
    # gamma = beta = 0 makes the conv path output exactly 0, leaving only what the shortcut adds.
    block.bn2.weight.set_value(paddle.zeros_like(block.bn2.weight))
    block.bn2.bias.set_value(paddle.zeros_like(block.bn2.bias))


@pytest.mark.parametrize("activation, act_of_zero", [("relu", 0.0), ("sigmoid", 0.5)])
def test_plain_block_does_not_add_its_input(activation, act_of_zero):
    x = paddle.randn([2, 8, 6, 6])
    plain = BasicBlock(8, 8, use_residual=False, activation=activation)
    residual = BasicBlock(8, 8, use_residual=True, activation=activation)
    for block in (plain, residual):
        _zero_second_bn(block)
        block.eval()
    np.testing.assert_allclose(plain(x).numpy(), np.full(x.shape, act_of_zero, "float32"))
    # Control: the same zeroing in a residual block leaves act(x), so the check above can fail.
    act = paddle.nn.functional.relu if activation == "relu" else paddle.nn.functional.sigmoid
    np.testing.assert_allclose(residual(x).numpy(), act(x).numpy(), rtol=1e-6)


def test_every_plain_block_outputs_act_of_zero_when_its_conv_path_is_zeroed():
    x = paddle.randn([2, 3, 16, 16])
    for name, expect_zero in [("resnet18_plain", True), ("resnet18", False)]:
        model = build_model(name, stem="cifar")
        outputs = {}
        for block_name, layer in model.named_sublayers():
            if isinstance(layer, BasicBlock):
                _zero_second_bn(layer)
                layer.register_forward_post_hook(
                    lambda module, inp, out, n=block_name: outputs.update({n: out.numpy()}))
        model.eval()
        model(x)
        assert len(outputs) == 8
        # A residual add in any block would pass its (non-zero) input through relu.
        all_zero = {n: not out.any() for n, out in outputs.items()}
        assert all(all_zero.values()) == expect_zero, (name, all_zero)


def _feature_sizes(model: paddle.nn.Layer, x: paddle.Tensor) -> tuple[list[int], list[int], list[int]]:
    seen = {}
    pre = model.layer1.register_forward_pre_hook(lambda layer, inp: seen.update(l1=inp[0].shape))
    post = model.layer4.register_forward_post_hook(
        lambda layer, inp, out: seen.update(l4=out.shape))
    out = model(x)
    pre.remove()
    post.remove()
    return seen["l1"], seen["l4"], out.shape


@pytest.mark.parametrize("stem, shape, into_layer1, out_of_layer4", [
    ("imagenet", [2, 1, 28, 28], [2, 64, 7, 7], [2, 512, 1, 1]),
    ("imagenet", [2, 1, 32, 32], [2, 64, 8, 8], [2, 512, 1, 1]),
    ("imagenet", [2, 3, 32, 32], [2, 64, 8, 8], [2, 512, 1, 1]),
    ("cifar", [2, 1, 28, 28], [2, 64, 28, 28], [2, 512, 4, 4]),
    ("cifar", [2, 1, 32, 32], [2, 64, 32, 32], [2, 512, 4, 4]),
    ("cifar", [2, 3, 32, 32], [2, 64, 32, 32], [2, 512, 4, 4]),
])
@pytest.mark.parametrize("name", ["resnet18", "resnet18_plain"])
def test_feature_and_output_shapes(name, stem, shape, into_layer1, out_of_layer4):
    model = build_model(name, num_classes=7, in_channels=shape[1], stem=stem)
    l1, l4, out = _feature_sizes(model, paddle.randn(shape))
    assert (list(l1), list(l4), list(out)) == (into_layer1, out_of_layer4, [2, 7])


@pytest.mark.parametrize("name", ["resnet18", "resnet18_plain"])
def test_unknown_stem_is_a_config_error(name):
    with pytest.raises(ConfigError, match=r"model\.stem.*'bogus'.*imagenet, cifar"):
        build_model(name, stem="bogus")
