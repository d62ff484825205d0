"""runtime.conv_kernel=onednn: the compiled oneDNN conv gives paddle's conv results, forward and backward,
networks pick it where the config and the CPU say, and a machine that cannot build it falls back."""

from __future__ import annotations

import shutil

import numpy as np
import paddle
import pytest
from test_fast_conv import CASES, _forward_backward, _out_side

from paddle_cnn import fast_conv, network, onednn_conv, runtime
from paddle_cnn.config import build_config
from paddle_cnn.registry import build_model, model_info, model_names

from numerics import (
    assert_network_within_rounding,
    assert_within_rounding,
    chain_length,
    conv_reduction_length,
    magnitudes,
)

needs_operator = pytest.mark.skipif(onednn_conv.load() is None, reason=f"{onednn_conv.unavailable_reason()}")


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler on this machine")
def test_operator_builds_wherever_there_is_a_compiler():
    # Without this, a broken build would only show as skipped tests below.
    assert onednn_conv.load() is not None, onednn_conv.unavailable_reason()


@needs_operator
@pytest.mark.parametrize("c_in,c_out,side,k,stride,pad,bias,path", CASES)
def test_onednn_conv_matches_paddle_conv_forward_and_backward(c_in, c_out, side, k, stride, pad, bias, path):
    def make_reference():
        return paddle.nn.Conv2D(c_in, c_out, k, stride=stride, padding=pad, bias_attr=None if bias else False)

    paddle.seed(0)
    ref, candidate = make_reference(), make_reference()
    candidate.set_state_dict(ref.state_dict())
    assert fast_conv.enable(candidate, onednn=True) == 1
    x_np = np.random.default_rng(1).standard_normal((3, c_in, side, side)).astype(np.float32)
    out_hw = _out_side(side, k, stride, pad)
    upstream = np.random.default_rng(2).standard_normal((3, c_out, *out_hw)).astype(np.float32)
    expected, got = _forward_backward(ref, x_np, upstream), _forward_backward(candidate, x_np, upstream)
    bounds = magnitudes(make_reference, ref.state_dict(), x_np, upstream)
    kernel = (k, k) if isinstance(k, int) else k
    n = conv_reduction_length(3, c_in, c_out, kernel, out_hw)
    for e, g, m, name in zip(expected, got, bounds, ["output", "input grad", "weight grad", "bias grad"]):
        assert_within_rounding(g, e, m, n, name)


@needs_operator
def test_an_input_that_needs_no_gradient_gets_none_and_the_weight_gradient_is_unchanged():
    paddle.seed(0)
    layer = paddle.nn.Conv2D(3, 8, 3, padding=1, bias_attr=False)
    fast_conv.enable(layer, onednn=True)
    x_np = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    grads = []
    for needs in (True, False):
        x = paddle.to_tensor(x_np, stop_gradient=not needs)
        layer.clear_gradients()
        layer(x).square().sum().backward()
        grads.append(layer.weight.grad.numpy())
        assert (x.grad is not None) is needs
    np.testing.assert_array_equal(grads[0], grads[1])


@needs_operator
@pytest.mark.parametrize("name", [n for n in model_names() if model_info(n).fast_conv])
def test_every_registered_model_computes_the_same_through_onednn(name):
    paddle.seed(0)
    reference = build_model(name)
    reference.eval()
    candidate = build_model(name)
    candidate.set_state_dict(reference.state_dict())
    candidate.eval()
    assert fast_conv.enable(candidate, onednn=True) > 0
    in_channels = next(p for p in reference.parameters() if p.ndim == 4).shape[1]
    side = model_info(name).input_size
    x = np.random.default_rng(0).standard_normal((2, in_channels, side, side)).astype(np.float32)

    def make_reference():
        net = build_model(name)
        net.eval()
        return net

    assert_network_within_rounding(make_reference, reference.state_dict(), candidate, x, chain_length(reference, x))


def _onednn_layers(kernel: str) -> list[bool]:
    net = network.build_network(build_config({"model": {"name": "lenet"}, "runtime": {"conv_kernel": kernel}}))
    return [layer.__dict__["_fast_conv_onednn"] for layer in net.sublayers() if type(layer) is fast_conv.FastConv2D]


@needs_operator
@pytest.mark.parametrize("kernel,vendor,expected", [
    ("onednn", "AuthenticAMD", True), ("gemm", "GenuineIntel", False),
    ("auto", "GenuineIntel", True), ("auto", "AuthenticAMD", False),  # auto: on only where it was measured faster
])
def test_conv_kernel_chooses_the_operator_by_config_and_cpu(monkeypatch, kernel, vendor, expected):
    monkeypatch.setattr(fast_conv, "cpu_vendor", lambda: vendor)
    assert _onednn_layers(kernel) == [expected] * 3
    # env.json's runtime_decisions says which kernel ran and why
    chosen = "onednn" if expected else "gemm"
    assert runtime.DECISIONS["conv_kernel"] == f"{chosen} (runtime.conv_kernel={kernel}, {vendor})"


def test_an_operator_that_cannot_be_built_falls_back_with_one_warning(monkeypatch, capsys):
    monkeypatch.setattr(onednn_conv, "_state", {"reason": "the build failed (test)"})
    monkeypatch.setattr(fast_conv, "_warned", [])
    assert _onednn_layers("onednn") == [False] * 3
    assert _onednn_layers("onednn") == [False] * 3
    err = capsys.readouterr().err
    assert err.count("oneDNN conv operator is unavailable (the build failed (test))") == 1


def test_a_failing_build_is_reported_with_its_log_not_raised(monkeypatch, tmp_path):
    broken = tmp_path / "broken.cc"
    broken.write_text("#error deliberately broken\n")
    monkeypatch.setattr(onednn_conv, "_state", {})
    monkeypatch.setattr(onednn_conv, "SOURCE", broken)
    monkeypatch.setenv("PADDLE_CNN_CACHE", str(tmp_path / "cache"))
    assert onednn_conv.load() is None
    reason = onednn_conv.unavailable_reason()
    assert "build failed" in reason and "build.log" in reason
    log = next((tmp_path / "cache").glob("onednn_conv-*/build.log"))
    assert "deliberately broken" in log.read_text()
