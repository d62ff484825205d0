"""The CIFAR ResNets of He et al. 2016: sizes derived by hand against the paper, shortcuts, plain arm."""

from __future__ import annotations

import paddle
import pytest

from paddle_cnn import report
from paddle_cnn.errors import ConfigError
from paddle_cnn.models.resnet_cifar import ZeroPadShortcut
from paddle_cnn.registry import build_model

# Depth -> the paper's parameter count (Table 6), in millions as printed there.
PAPER_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


def _trainable(net) -> int:
    return sum(int(p.numel()) for p in net.parameters() if not p.stop_gradient)


def _expected_params(n: int) -> int:
    """Option A, by hand: 3x3 convs without bias, BN scale+shift per channel, 64 -> 10 linear."""
    stem = 3 * 16 * 9 + 2 * 16
    stage1 = 2 * n * (16 * 16 * 9 + 2 * 16)
    stage2 = 16 * 32 * 9 + (2 * n - 1) * 32 * 32 * 9 + 2 * n * 2 * 32
    stage3 = 32 * 64 * 9 + (2 * n - 1) * 64 * 64 * 9 + 2 * n * 2 * 64
    return stem + stage1 + stage2 + stage3 + 64 * 10 + 10


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS_M))
def test_parameter_counts_match_the_hand_count_and_the_paper(depth):
    net = build_model(f"resnet{depth}")
    expected = _expected_params((depth - 2) // 6)
    assert _trainable(net) == expected
    assert round(expected / 1e6, 2 if depth < 100 else 1) == PAPER_PARAMS_M[depth]


def test_plain_arm_has_the_same_parameters_and_no_shortcut_layers():
    plain, residual = build_model("resnet56", use_residual=False), build_model("resnet56")
    assert _trainable(plain) == _trainable(residual)  # option A shortcuts have no parameters
    assert all(block.shortcut is None for block in plain.sublayers() if hasattr(block, "shortcut"))
    assert sum(isinstance(layer, ZeroPadShortcut) for layer in residual.sublayers()) == 2


def test_option_b_adds_two_projections():
    a, b = build_model("resnet20"), build_model("resnet20", shortcut_type="B")
    assert _trainable(b) - _trainable(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_zero_pad_shortcut_subsamples_and_pads_with_zeros():
    x = paddle.arange(2 * 2 * 4 * 4, dtype="float32").reshape([2, 2, 4, 4])
    out = ZeroPadShortcut(2, 5, 2)(x)
    assert out.shape == [2, 5, 2, 2]
    assert (out[:, :2].numpy() == x[:, :, ::2, ::2].numpy()).all() and not out[:, 2:].numpy().any()


def test_macs_match_the_hand_count_of_resnet20():
    # Convolutions by hand: stem, 6 convs at 16x32x32, then per stage one strided and 5 convs.
    conv = 3 * 16 * 9 * 1024 + 6 * 16 * 16 * 9 * 1024 + (16 * 32 * 9 + 5 * 32 * 32 * 9) * 256 \
        + (32 * 64 * 9 + 5 * 64 * 64 * 9) * 64
    assert conv == 40_550_400  # the ~41M usually quoted for ResNet-20
    macs = report.model_report(build_model("resnet20"), (3, 32, 32))[1]["macs"]
    # paddle.flops adds 2 per BatchNorm output (188,416 outputs here), the linear layer and activations.
    assert 1.0 <= macs / conv <= 1.03


@pytest.mark.parametrize("options,words", [({"shortcut_type": "C"}, "shortcut_type"),
                                           ({"shortcut_type": "a"}, "A, B")])
def test_bad_shortcut_type_is_a_config_error(options, words):
    with pytest.raises(ConfigError, match=words):
        build_model("resnet20", **options)
