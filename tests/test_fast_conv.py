"""runtime.fast_conv: the batch-GEMM conv gives paddle's conv results, and training uses it when asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from paddle_cnn import fast_conv, network, onednn_conv, report
from paddle_cnn.bench import common, training
from paddle_cnn.cli import main
from paddle_cnn.config import build_config
from paddle_cnn.registry import build_model, model_info, model_names

from numerics import (
    assert_network_within_rounding,
    assert_within_rounding,
    chain_length,
    conv_reduction_length,
    magnitudes,
)

# (in, out, side, kernel, stride, padding, bias, path the layer takes): every GEMM case is a small
# output (2x2, 1x1, 2x1, 6x8x8 = 384 values, 3x4x5); the paddle cases are 40x9x9 and 30x10x10, too
# large, with and without a bias (the [C, 1, 1] add), and a 1x1 stride-1 conv at 4x4; non-square
# kernels catch an h/w mix-up. Several are global-window convs (every output window covers the whole
# input: 2x2 k3 p1, 5x5 k5, 1x1 k3 p1, 2x2 k3 s2 p1, 2x2 k(3,5) p(1,2)), which the oneDNN operator runs
# as one dense GEMM; their unused taps must get an exactly zero weight gradient, as paddle's do.
CASES = [
    (3, 5, 2, 3, 1, 1, True, "gemm"),
    (4, 6, 3, 3, 2, 1, False, "gemm"),
    (2, 3, 5, 5, 1, 0, True, "gemm"),
    (3, 4, 4, (3, 1), (2, 4), (1, 0), True, "gemm"),
    (2, 6, 8, 3, 1, 1, True, "gemm"),
    (2, 3, 9, (3, 5), 2, (0, 2), False, "gemm"),
    (2, 40, 9, 3, 1, 1, True, "paddle"),
    (2, 40, 9, (3, 5), 1, (1, 2), False, "paddle"),
    (2, 30, 10, (3, 5), 1, (1, 2), True, "paddle"),
    (6, 5, 2, 1, 1, 0, True, "gemm"),     # 1x1 kernel, 2x2 output
    (6, 5, 4, 1, 1, 0, True, "paddle"),   # 1x1 kernel at 4x4: no im2col to save
    (6, 5, 4, 1, 2, 0, False, "gemm"),    # strided 1x1 (a ResNet projection)
    (4, 5, 1, 3, 1, 1, True, "gemm"),     # 1x1 map, 3x3 kernel: only the centre tap meets the input
    (3, 4, 2, 3, 2, 1, False, "gemm"),    # 2x2 -> 1x1, stride 2 (ResNet18's step into layer4)
    (3, 4, 2, (3, 5), 1, (1, 2), True, "gemm"),
]


def _out_side(side, k, stride, pad):
    k, stride, pad = ((v, v) if isinstance(v, int) else v for v in (k, stride, pad))
    return [(side + 2 * p - kk) // s + 1 for kk, s, p in zip(k, stride, pad)]


def _forward_backward(layer, x_np, upstream):
    x = paddle.to_tensor(x_np, stop_gradient=False)
    out = layer(x)
    (out * paddle.to_tensor(upstream)).sum().backward()
    return [out.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]


def _kernels():
    """fast_conv's kernels to check: the GEMM path always, the oneDNN operator where it can be built."""
    reason = None if onednn_conv.load() is not None else onednn_conv.unavailable_reason()
    return ["gemm", pytest.param("onednn", marks=pytest.mark.skipif(reason is not None, reason=str(reason)))]


@pytest.mark.parametrize("kernel", _kernels())
@pytest.mark.parametrize("c_in,c_out,side,k,stride,pad,bias,path", CASES)
def test_fast_conv_matches_paddle_conv_forward_and_backward(c_in, c_out, side, k, stride, pad, bias, path, kernel):
    def make_reference():
        return paddle.nn.Conv2D(c_in, c_out, k, stride=stride, padding=pad, bias_attr=None if bias else False)

    paddle.seed(0)
    ref, fast = make_reference(), make_reference()
    fast.set_state_dict(ref.state_dict())
    assert fast_conv.enable(fast, onednn=kernel == "onednn") == 1
    assert fast_conv.takes_gemm(fast, [3, c_in, side, side]) is (path == "gemm")
    x_np = np.random.default_rng(1).standard_normal((3, c_in, side, side)).astype(np.float32)
    out_hw = _out_side(side, k, stride, pad)
    upstream = np.random.default_rng(2).standard_normal((3, c_out, *out_hw)).astype(np.float32)
    expected, got = _forward_backward(ref, x_np, upstream), _forward_backward(fast, x_np, upstream)
    bounds = magnitudes(make_reference, ref.state_dict(), x_np, upstream)
    assert len(got) == len(expected) == len(bounds) == (4 if bias else 3)
    kernel = (k, k) if isinstance(k, int) else k
    n = conv_reduction_length(3, c_in, c_out, kernel, out_hw)
    for e, g, m, name in zip(expected, got, bounds, ["output", "input grad", "weight grad", "bias grad"]):
        assert_within_rounding(g, e, m, n, name)


# Runs each CASES conv through the oneDNN operator with ONEDNN_VERBOSE on and prints, per case, whether
# fast_conv.global_window says dense and whether oneDNN ran a convolution primitive or only a GEMM.
_VERBOSE_PROBE = """
import json, sys
from paddle_cnn import runtime
runtime.setup()
import paddle
from paddle_cnn import fast_conv, onednn_conv
assert onednn_conv.load() is not None
for c_in, c_out, side, k, stride, pad, bias, _ in json.loads(sys.argv[1]):
    layer = paddle.nn.Conv2D(c_in, c_out, k, stride=stride, padding=pad)
    fast_conv.enable(layer, onednn=True)
    x = paddle.randn([2, c_in, side, side])
    print("CASE", fast_conv.global_window(layer, x.shape), flush=True)
    layer(x)
    print("END", flush=True)
"""


@pytest.mark.parametrize("kernel", [k for k in _kernels() if k != "gemm"])
def test_global_window_names_exactly_the_convs_the_operator_runs_as_one_gemm(kernel):
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", _VERBOSE_PROBE, json.dumps(CASES)], capture_output=True, text=True,
                         timeout=300, env=env, check=True).stdout
    cases = out.split("CASE ")[1:]
    assert len(cases) == len(CASES)
    assert sum(case.startswith("True") for case in cases) == 5  # the five global-window cases above
    for case, spec in zip(cases, CASES):
        dense, ran = case.startswith("True"), case.split("END")[0]
        assert (",convolution," not in ran) is dense, (spec, ran[-500:])
        assert (",gemm_api," in ran) is dense, spec


@pytest.mark.parametrize("c_out,h,w,expected", [
    (512, 4, 4, True),    # ResNet18's 4x4 stages: any channel count
    (512, 1, 1, True),
    (64, 6, 6, True),     # 2,304 values per image: the measured limit
    (16, 10, 10, True),   # LeNet's second conv
    (64, 8, 8, False),    # measured 1.03-1.31x paddle's time: paddle's own
    (6, 28, 28, False),   # LeNet's first conv
    (64, 16, 16, False),  # ResNet18's stem
])
def test_gemm_path_is_taken_where_it_was_measured_faster(c_out, h, w, expected):
    assert fast_conv.uses_gemm(c_out, h, w) is expected


@pytest.mark.parametrize("c_out,h,w,expected", [
    (48, 4, 4, False),    # GoogLeNet's 832->48 at 4x4: 2.6x paddle's time as a GEMM
    (512, 2, 2, True),
    (128, 1, 1, True),
])
def test_pointwise_convs_take_the_gemm_only_when_tiny(c_out, h, w, expected):
    assert fast_conv.uses_gemm(c_out, h, w, pointwise=True) is expected


@pytest.mark.parametrize("layer", [
    paddle.nn.Conv2D(4, 4, 3, groups=2),
    paddle.nn.Conv2D(4, 4, 3, dilation=2),
    paddle.nn.Conv2D(4, 4, 3, padding="SAME"),
    paddle.nn.Conv2D(4, 4, 3, padding=[1, 0, 2, 1]),  # asymmetric
    paddle.nn.Conv2D(4, 4, 3, padding=1, padding_mode="reflect"),
    paddle.nn.Conv2D(4, 4, 3, data_format="NHWC"),
], ids=["groups", "dilation", "same", "asymmetric", "reflect", "nhwc"])
def test_convs_it_cannot_compute_are_left_alone(layer):
    assert fast_conv.enable(layer) == 0 and type(layer) is paddle.nn.Conv2D


def test_subclasses_of_conv2d_keep_their_own_forward():
    class Doubled(paddle.nn.Conv2D):
        def forward(self, x):
            return 2 * super().forward(x)

    net = paddle.nn.Sequential(Doubled(3, 4, 3), paddle.nn.Conv2D(4, 4, 3))
    assert fast_conv.enable(net) == 1
    assert type(net[0]) is Doubled and type(net[1]) is fast_conv.FastConv2D


def test_resnet18_keeps_its_weights_names_and_macs():
    plain, fast = build_model("resnet18"), build_model("resnet18")
    keys = list(fast.state_dict())
    assert fast_conv.enable(fast) == 20  # stem, 16 block convs, 3 projections
    assert list(fast.state_dict()) == keys
    assert fast(paddle.randn([2, 3, 32, 32])).shape == [2, 10]
    # paddle.flops finds its conv hook by exact type: the report must still count every conv.
    assert report.model_report(fast, (3, 32, 32))[1]["macs"] == report.model_report(plain, (3, 32, 32))[1]["macs"]


@pytest.mark.parametrize("kernel", _kernels())
@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_computes_the_same_with_fast_conv(name, kernel):
    """fast_conv is on by default for every model: outputs and every gradient within float32 rounding."""
    paddle.seed(0)
    info = model_info(name)
    side = info.input_size
    reference = build_model(name)
    reference.eval()  # dropout off, so the three runs compare one function
    candidate = build_model(name)
    candidate.set_state_dict(reference.state_dict())
    candidate.eval()
    plain_convs = sum(type(layer) is paddle.nn.Conv2D for layer in candidate.sublayers())
    # The registry says where fast_conv applies (the from-scratch LeNet has its own operators).
    assert info.fast_conv is (plain_convs > 0)
    if not info.fast_conv:
        return
    # every conv of the shipped models is supported
    assert fast_conv.enable(candidate, onednn=kernel == "onednn") == plain_convs
    in_channels = next(p for p in reference.parameters() if p.ndim == 4).shape[1]
    x = np.random.default_rng(0).standard_normal((2, in_channels, side, side)).astype(np.float32)

    def make_reference():
        net = build_model(name)
        net.eval()
        return net

    assert_network_within_rounding(make_reference, reference.state_dict(), candidate, x, chain_length(reference, x))


@pytest.mark.parametrize("full_graph", [False, True], ids=["sot", "ast"])
def test_fast_conv_network_still_converts_to_static(full_graph):
    def make_net():
        return paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3, padding=1), paddle.nn.ReLU(), paddle.nn.Conv2D(4, 2, 4))

    net = make_net()
    x = paddle.randn([2, 3, 4, 4])
    expected = net(x).numpy()
    # Relu passes non-negative values unchanged, so the float64 net on absolute values bounds
    # sum|terms| through both convs (first order), and the two reductions' roundings add up.
    magnitude = magnitudes(make_net, net.state_dict(), x.numpy(), np.ones_like(expected))[0]
    fast_conv.enable(net)
    static = paddle.jit.to_static(net, input_spec=[paddle.static.InputSpec([None, 3, 4, 4], "float32")],
                                  full_graph=full_graph)
    assert_within_rounding(static(x).numpy(), expected, magnitude, n=(3 * 9 + 1) + (4 * 16 + 1), what="logits")


@pytest.mark.parametrize("enabled", [False, True])
def test_build_network_switches_convs_only_when_the_config_says_so(enabled):
    cfg = build_config({"model": {"name": "lenet"}, "runtime": {"fast_conv": enabled}})
    net = network.build_network(cfg)
    fast = [layer for layer in net.sublayers() if type(layer) is fast_conv.FastConv2D]
    assert len(fast) == (3 if enabled else 0)


@pytest.mark.parametrize("enabled", [False, True])
def test_bench_sides_build_the_network_they_are_named_after(enabled):
    spec = common.parse_models("lenet")[0]
    model = training.paddle_train_step(spec, 2, fast_conv=enabled)[0]
    fast = [layer for layer in model.network.sublayers() if type(layer) is fast_conv.FastConv2D]
    assert len(fast) == (3 if enabled else 0)


def test_training_with_fast_conv_follows_the_same_trajectory(tmp_path, data_root):
    from conftest import tiny_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data_root)))
    metrics = {}
    for enabled in (False, True):
        run_dir = tmp_path / f"fast_{enabled}"
        assert main(["train", str(config), "--output-dir", str(run_dir), "-o", "train.epochs=2",
                     "-o", f"runtime.fast_conv={str(enabled).lower()}"]) == 0
        metrics[enabled] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["runtime"]["fast_conv"] is enabled
    for plain, fast in zip(metrics[False], metrics[True]):
        # Same weights and batches; only float rounding differs, so losses agree closely.
        assert fast["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-3)
        assert fast["dev_loss"] == pytest.approx(plain["dev_loss"], rel=1e-3)


def test_bench_conv_times_both_paths_for_every_layer_and_names_the_chosen_one(tmp_path, capsys):
    path = tmp_path / "conv.json"
    assert main(["bench", "--conv", "--batch", "2", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    rows = result["conv"]
    assert len(rows) >= 10 and result["batch"] == 2 and result["omp_num_threads"] >= 1
    assert {row["gemm_path"] for row in rows} == {"gemm", "paddle"}
    assert all(row["paddle_ms"] > 0 and row["gemm_ms"] > 0 for row in rows)
    dense = {"resnet18 2x2", "resnet18 1x1", "lenet conv5"}  # global-window layers: one dense GEMM
    if fast_conv.use_onednn("auto"):
        assert all(row["fast_conv_path"] == ("onednn dense" if row["layer"] in dense else "onednn") for row in rows)
    else:
        assert all(row["fast_conv_path"] == row["gemm_path"] for row in rows)
    assert all((row["onednn_ms"] or 0) > 0 for row in rows) is (onednn_conv.load() is not None)
    paths = {row["layer"]: row["gemm_path"] for row in rows}
    assert paths["resnet18 1x1"] == paths["lenet conv3"] == "gemm"
    assert paths["resnet18 stem"] == paths["lenet conv1"] == "paddle"
    table = capsys.readouterr().out
    assert "| resnet18 2x2 | 256x2x2 -> 256x2x2, k3 s1 | " in table
    assert table.count("\n| ") == len(rows)  # one line per layer after the header


def test_bench_conv_and_ops_cannot_be_combined(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--ops", "--conv"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("kernel,stride,pad,ceil", [(2, 2, 0, False), (3, 2, 1, False), (3, 2, 0, True)],
                         ids=["lenet-2x2", "resnet-stem-3x3", "ceil"])
def test_indexed_max_pool_equals_paddle_max_pool_bit_for_bit(kernel, stride, pad, ceil):
    # Rounded values and ReLU zeros make ties in most windows: both kernels must pick the same element.
    x = np.maximum(np.round(np.random.default_rng(0).standard_normal((4, 3, 15, 15)), 0), 0).astype(np.float32)
    upstream = np.random.default_rng(1).standard_normal((4, 3, 15, 15)).astype(np.float32)
    results = []
    for fast in (False, True):
        pool = paddle.nn.MaxPool2D(kernel, stride, pad, ceil_mode=ceil)
        if fast:
            fast_conv.enable(pool)
            assert type(pool) is fast_conv.FastMaxPool2D
        xt = paddle.to_tensor(x, stop_gradient=False)
        y = pool(xt)
        (y * paddle.to_tensor(upstream[..., :y.shape[2], :y.shape[3]])).sum().backward()
        results.append((y.numpy(), xt.grad.numpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("pool", [paddle.nn.MaxPool2D(2, data_format="NHWC"), paddle.nn.MaxPool2D(2, padding="SAME"),
                                  paddle.nn.MaxPool2D(2, return_mask=True)], ids=["nhwc", "same", "mask"])
def test_max_pools_it_cannot_compute_are_left_alone(pool):
    fast_conv.enable(pool)
    assert type(pool) is paddle.nn.MaxPool2D


def _batch_norm_run(layer, x_np, upstream):
    """Two training steps' outputs and gradients, the running statistics after them, and an eval output."""
    results = []
    for _ in range(2):
        layer.train()
        x = paddle.to_tensor(x_np, stop_gradient=False)
        out = layer(x)
        (out * paddle.to_tensor(upstream)).sum().backward()
        results += [out.numpy(), x.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()]
        layer.clear_gradients()
    layer.eval()
    return results + [layer._mean.numpy(), layer._variance.numpy(), layer(paddle.to_tensor(x_np)).numpy()]


@pytest.mark.parametrize("side", [1, 3], ids=["1x1 map: NC kernel", "3x3 map: paddle's own"])
def test_batch_norm_on_1x1_maps_keeps_statistics_running_averages_and_gradients(side):
    paddle.seed(0)
    reference = paddle.nn.BatchNorm2D(6, momentum=0.8)
    fast = paddle.nn.BatchNorm2D(6, momentum=0.8)
    fast.set_state_dict(reference.state_dict())
    fast_conv.enable(fast)
    assert type(fast) is fast_conv.FastBatchNorm2D
    rng = np.random.default_rng(3)
    x_np = (rng.standard_normal((16, 6, side, side)) * 3 + 1).astype(np.float32)
    upstream = rng.standard_normal((16, 6, side, side)).astype(np.float32)
    expected, got = _batch_norm_run(reference, x_np, upstream), _batch_norm_run(fast, x_np, upstream)
    assert len(got) == len(expected) == 11
    for e, g in zip(expected, got):
        # 16 x side^2 values per channel: reductions this short round to a few float32 ulps.
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(e).max())))
    assert not np.allclose(got[-3], 0)  # the running mean did move (the update path ran)


@pytest.mark.parametrize("side", [1, 4])
def test_global_average_pool_of_a_1x1_map_is_passed_through_bit_for_bit(side):
    pool = paddle.nn.AdaptiveAvgPool2D(1)
    fast = paddle.nn.AdaptiveAvgPool2D(1)
    fast_conv.enable(fast)
    assert type(fast) is fast_conv.FastGlobalAvgPool2D
    x_np = np.random.default_rng(4).standard_normal((5, 7, side, side)).astype(np.float32)
    upstream = paddle.to_tensor(np.random.default_rng(5).standard_normal((5, 7, 1, 1)).astype(np.float32))
    results = []
    for layer in (pool, fast):
        x = paddle.to_tensor(x_np, stop_gradient=False)
        out = layer(x)
        (out * upstream).sum().backward()
        assert out is not x
        results.append((out.numpy(), x.grad.numpy()))
    for e, g in zip(*results):
        np.testing.assert_array_equal(g, e)


def test_pools_to_other_sizes_are_left_alone():
    net = paddle.nn.Sequential(paddle.nn.AdaptiveAvgPool2D(2), paddle.nn.AdaptiveAvgPool2D(1, data_format="NHWC"))
    fast_conv.enable(net)
    assert [type(layer) for layer in net] == [paddle.nn.AdaptiveAvgPool2D] * 2


def _onednn_only():
    reason = onednn_conv.unavailable_reason() if onednn_conv.load() is None else None
    return pytest.mark.skipif(reason is not None, reason=str(reason))


# LeNet's 2x2 pool; an odd side whose last row no window reaches (oneDNN gets a negative right padding);
# padding with and without the padded cells in the divisor; non-square sizes; paddle's default stride.
AVG_POOLS = [((4, 3, 10, 10), 2, 2, 0, True), ((4, 3, 5, 5), 2, 2, 0, True), ((2, 5, 7, 9), 3, 2, 1, True),
             ((2, 5, 7, 9), 3, 2, 1, False), ((2, 4, 6, 6), (3, 2), (1, 2), (1, 0), True),
             ((2, 2, 8, 8), 3, None, 1, False)]


@_onednn_only()
@pytest.mark.parametrize("shape,kernel,stride,pad,exclusive", AVG_POOLS)
def test_onednn_average_pool_matches_paddle_forward_and_backward(shape, kernel, stride, pad, exclusive):
    x_np = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    results = []
    for onednn in (False, True):
        pool = paddle.nn.AvgPool2D(kernel, stride, pad, exclusive=exclusive)
        fast_conv.enable(pool, onednn=onednn)
        assert (type(pool) is fast_conv.FastAvgPool2D) is onednn  # without the operator: paddle's own
        x = paddle.to_tensor(x_np, stop_gradient=False)
        out = pool(x)
        upstream = np.random.default_rng(7).standard_normal(out.shape).astype(np.float32)  # the same for both
        (out * paddle.to_tensor(upstream)).sum().backward()
        results.append((out.numpy(), x.grad.numpy()))
    for expected, got in zip(*results):
        assert got.shape == expected.shape
        # a mean of at most 9 values: the summation order differs, a few float32 ulps
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pool", [paddle.nn.AvgPool2D(2, ceil_mode=True), paddle.nn.AvgPool2D(2, divisor_override=3),
                                  paddle.nn.AvgPool2D(2, data_format="NHWC"), paddle.nn.AvgPool2D(2, padding="SAME"),
                                  paddle.nn.AvgPool2D(2, padding=[0, 1, 0, 1]), paddle.nn.AvgPool2D(2, padding=2)],
                         ids=["ceil", "divisor", "nhwc", "same", "asymmetric", "padding-over-kernel"])
def test_average_pools_the_operator_cannot_compute_are_left_alone(pool):
    fast_conv.enable(pool, onednn=True)
    assert type(pool) is paddle.nn.AvgPool2D


@_onednn_only()
def test_a_float64_average_pool_takes_paddles_kernel():
    pool = paddle.nn.AvgPool2D(2)
    fast_conv.enable(pool, onednn=True)
    x = paddle.to_tensor(np.arange(32, dtype=np.float64).reshape(1, 2, 4, 4))
    np.testing.assert_array_equal(pool(x).numpy(), paddle.nn.functional.avg_pool2d(x, 2).numpy())


@_onednn_only()
def test_lenet_with_the_onednn_pool_keeps_its_macs():
    plain, fast = build_model("lenet"), build_model("lenet")
    fast_conv.enable(fast, onednn=True)
    assert any(type(layer) is fast_conv.FastAvgPool2D for layer in fast.sublayers())
    # paddle.flops counts an average pool's additions: the report must find FastAvgPool2D's counter.
    assert report.model_report(fast, (1, 28, 28))[1]["macs"] == report.model_report(plain, (1, 28, 28))[1]["macs"]


@pytest.mark.parametrize("fill", [np.nan, -np.inf], ids=["nan", "-inf"])
def test_max_pool_of_non_finite_windows_is_paddles_own(fill):
    """The indexed kernel would give -FLT_MAX for NaN and corrupt the heap in its backward (index -1)."""
    x_np = np.random.default_rng(8).standard_normal((2, 3, 8, 8)).astype(np.float32)
    x_np[0, 1, :4, :4] = fill
    results = []
    for fast in (False, True):
        pool = paddle.nn.MaxPool2D(2, 2)
        if fast:
            fast_conv.enable(pool)
            assert type(pool) is fast_conv.FastMaxPool2D
        x = paddle.to_tensor(x_np, stop_gradient=False)
        y = pool(x)
        y.sum().backward()
        results.append((y.numpy(), x.grad.numpy()))
    for expected, got in zip(*results):
        np.testing.assert_array_equal(got, expected)
    assert np.isnan(results[1][0][0, 1, 0, 0]) == np.isnan(fill)
