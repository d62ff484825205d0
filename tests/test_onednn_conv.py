"""runtime.conv_kernel=onednn: the compiled operator builds, skips unneeded input gradients, networks pick it
where the config and the CPU say, and a machine that cannot build it falls back. Its parity with paddle's
conv, per layer and per registered model, is checked in test_fast_conv.py with the GEMM path's."""

from __future__ import annotations

import os
import shutil

import numpy as np
import paddle
import pytest

from paddle_cnn import fast_conv, network, onednn_conv, runtime
from paddle_cnn.config import build_config

needs_operator = pytest.mark.skipif(onednn_conv.load() is None, reason=f"{onednn_conv.unavailable_reason()}")


needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                    reason="no C++ compiler on this machine")


@needs_compiler
def test_operator_builds_wherever_there_is_a_compiler():
    # Without this, a broken build would only show as skipped tests below.
    assert onednn_conv.load() is not None, onednn_conv.unavailable_reason()


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


def _onednn_layers(kernel: str) -> list[bool]:
    net = network.build_network(build_config({"model": {"name": "lenet"}, "runtime": {"conv_kernel": kernel}}))
    return [layer.__dict__["_fast_conv_onednn"] for layer in net.sublayers() if type(layer) is fast_conv.FastConv2D]


@needs_operator
@pytest.mark.parametrize("kernel,vendor,expected", [
    ("onednn", "AuthenticAMD", True), ("gemm", "GenuineIntel", False),
    ("auto", "GenuineIntel", True), ("auto", "AuthenticAMD", True),  # auto: measured faster on both vendors
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


@needs_compiler  # the compiler's own error message is what the log must hold
def test_a_failing_build_is_reported_with_its_log_not_raised(monkeypatch, tmp_path):
    broken = tmp_path / "broken.cc"
    broken.write_text("#error deliberately broken\n")
    monkeypatch.setattr(onednn_conv, "_state", {})
    monkeypatch.setattr(onednn_conv, "SOURCES", (broken,))
    monkeypatch.setenv("PADDLE_CNN_CACHE", str(tmp_path / "cache"))
    assert onednn_conv.load() is None
    reason = onednn_conv.unavailable_reason()
    assert "build failed" in reason and "build.log" in reason
    log = next((tmp_path / "cache").glob("onednn_conv-*/build.log"))
    assert "deliberately broken" in log.read_text()


def test_an_unwritable_cache_is_named_not_a_missing_log(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    monkeypatch.setattr(onednn_conv, "_state", {})
    monkeypatch.setenv("PADDLE_CNN_CACHE", str(blocker))
    assert onednn_conv.load() is None
    reason = onednn_conv.unavailable_reason()
    assert "PADDLE_CNN_CACHE" in reason and str(blocker) in reason and "build.log" not in reason
