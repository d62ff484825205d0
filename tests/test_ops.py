"""From-scratch conv/pool operators against paddle.nn: outputs, gradients, size rule, counts, LeNet, bench."""

import numpy as np
import paddle
import pytest

from paddle_cnn.bench.ops import format_ops_table, run_ops_bench
from paddle_cnn.registry import build_model, model_names
from paddle_cnn.scratch_ops import (
    AvgPool2DScratch,
    Conv2DScratch,
    MaxPool2DScratch,
    conv2d_macs,
    conv2d_params,
    flops_counters,
    output_size,
)

from numerics import assert_network_within_rounding, assert_within_rounding, conv_reduction_length, magnitudes

# (batch, in, out, height, width, kernel, stride, padding): every case satisfies the size rule;
# non-square inputs catch a height/width mix-up, stride > 1 with padding catches offset errors.
CONV_CASES = [
    (2, 1, 1, 5, 5, 3, 1, 0),
    (2, 3, 4, 7, 9, 3, 2, 0),
    (1, 2, 5, 6, 6, 3, 1, 1),
    (2, 3, 2, 8, 8, 5, 1, 2),
    (2, 4, 3, 10, 7, 3, 3, 1),
    (2, 3, 4, 9, 9, 3, 2, 1),
    (2, 2, 3, 6, 8, 1, 1, 0),
    (1, 1, 6, 32, 32, 5, 1, 0),
]

# (batch, channels, height, width, kernel, stride, padding)
POOL_CASES = [
    (2, 3, 4, 4, 2, 2, 0),
    (2, 2, 7, 9, 3, 2, 0),
    (1, 3, 6, 6, 3, 1, 1),
    (2, 2, 9, 7, 3, 2, 1),
    (2, 1, 7, 7, 3, 3, 1),
    (2, 1, 7, 7, 5, 3, 2),
    (1, 6, 28, 28, 2, 2, 0),
]


def _forward_backward(layer, x_np, upstream):
    """Run layer on a copy of x_np and backpropagate sum(out * upstream); return out, x.grad, param grads."""
    x = paddle.to_tensor(x_np, stop_gradient=False)
    out = layer(x)
    (out * paddle.to_tensor(upstream)).sum().backward()
    return [out.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]


def _compare(scratch, make_reference, x_shape, seed, n, abs_input=True):
    """Assert scratch and a reference layer agree on output and every gradient within float32 rounding.

    Args:
        scratch: the layer under test, holding the reference's weights.
        make_reference: builds the reference layer (weights copied from scratch).
        x_shape: input shape.
        seed: RNG seed for the input and the upstream gradient.
        n: the longest reduction in the layer (numerics.conv_reduction_length for a conv).
        abs_input: see numerics.magnitudes.
    """
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal(x_shape).astype("float32")
    reference = make_reference()
    reference.set_state_dict(scratch.state_dict())
    out_shape = reference(paddle.to_tensor(x_np)).shape
    # A random upstream gradient, not ones, so a transposed or shifted gradient cannot pass.
    upstream = rng.standard_normal(out_shape).astype("float32")
    expected = _forward_backward(reference, x_np, upstream)
    got = _forward_backward(scratch, x_np, upstream)
    bounds = magnitudes(make_reference, scratch.state_dict(), x_np, upstream, abs_input)
    names = ["output", "input grad"] + [f"{name} grad" for name, _ in scratch.named_parameters()]
    assert len(got) == len(expected) == len(bounds) == len(names)
    for g, e, m, name in zip(got, expected, bounds, names):
        assert_within_rounding(g, e, m, n, name)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,c_in,c_out,h,w,k,s,p", CONV_CASES)
def test_conv_matches_paddle(n, c_in, c_out, h, w, k, s, p, bias):
    def make_reference():
        return paddle.nn.Conv2D(c_in, c_out, k, stride=s, padding=p, bias_attr=None if bias else False)

    reference = make_reference()
    scratch = Conv2DScratch(c_in, c_out, k, stride=s, padding=p, bias=bias)
    assert {key: v.shape for key, v in scratch.state_dict().items()} == \
        {key: v.shape for key, v in reference.state_dict().items()}
    if bias:
        # The default bias is zero; a random one checks it is added per output channel.
        reference.bias.set_value(paddle.randn([c_out]))
    scratch.set_state_dict(reference.state_dict())
    out_hw = (output_size(h, k, p, s), output_size(w, k, p, s))
    _compare(scratch, make_reference, (n, c_in, h, w), seed=k * 100 + s * 10 + p,
             n=conv_reduction_length(n, c_in, c_out, (k, k), out_hw))


@pytest.mark.parametrize("n,c,h,w,k,s,p", POOL_CASES)
def test_max_pool_matches_paddle(n, c, h, w, k, s, p):
    # The output is a selection (exact); an input gradient sums at most k*k overlapping windows.
    _compare(MaxPool2DScratch(k, s, p), lambda: paddle.nn.MaxPool2D(k, s, p), (n, c, h, w), seed=k + s + p,
             n=k * k, abs_input=False)


@pytest.mark.parametrize("exclusive", [True, False])
@pytest.mark.parametrize("n,c,h,w,k,s,p", POOL_CASES)
def test_avg_pool_matches_paddle(n, c, h, w, k, s, p, exclusive):
    # k*k terms and one division per output; an input gradient sums k*k windows' shares.
    _compare(AvgPool2DScratch(k, s, p, exclusive=exclusive), lambda: paddle.nn.AvgPool2D(k, s, p, exclusive=exclusive),
             (n, c, h, w), seed=k + s + p, n=k * k + 1)


def test_pool_stride_defaults_to_kernel_like_paddle():
    _compare(MaxPool2DScratch(3), lambda: paddle.nn.MaxPool2D(3), (1, 2, 6, 6), seed=0, n=9, abs_input=False)
    _compare(AvgPool2DScratch(3), lambda: paddle.nn.AvgPool2D(3), (1, 2, 6, 6), seed=0, n=10)


def test_output_size_rule():
    assert output_size(32, 5, 0, 1) == 28
    assert output_size(28, 2, 0, 2) == 14
    assert output_size(32, 3, 1, 1) == 32
    with pytest.raises(ValueError, match=r"\(32 \+ 2\*1 - 3\) / 2 \+ 1 = 16.5 is not an integer"):
        output_size(32, 3, 1, 2)
    with pytest.raises(ValueError, match="is not positive"):
        output_size(3, 5, 0, 1)


def test_size_rule_checked_on_construction_names_the_dimension():
    with pytest.raises(ValueError, match=r"Conv2DScratch height.*\(6 \+ 2\*0 - 3\) / 2 \+ 1 = 2.5"):
        Conv2DScratch(1, 1, 3, stride=2, input_size=(6, 7))
    with pytest.raises(ValueError, match=r"MaxPool2DScratch width.*\(5 \+ 2\*0 - 2\) / 2 \+ 1 = 2.5"):
        MaxPool2DScratch(2, 2, input_size=(4, 5))
    assert Conv2DScratch(1, 1, 3, stride=2, input_size=(7, 7)).output_hw(7, 7) == (3, 3)


def test_size_rule_checked_at_forward():
    with pytest.raises(ValueError, match="Conv2DScratch width.*is not an integer"):
        Conv2DScratch(1, 2, 3, stride=2)(paddle.randn([1, 1, 7, 6]))
    with pytest.raises(ValueError, match="AvgPool2DScratch height.*is not positive"):
        AvgPool2DScratch(5)(paddle.randn([1, 1, 3, 5]))


def test_invalid_hyperparameters_and_channels_raise():
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2DScratch(1, 1, 0)
    with pytest.raises(ValueError, match="padding"):
        MaxPool2DScratch(2, 2, padding=-1)
    with pytest.raises(ValueError, match="expects 3 input channels, got 1"):
        Conv2DScratch(3, 4, 3)(paddle.randn([1, 1, 5, 5]))


@pytest.mark.parametrize("c_in,c_out,k,side,bias", [(3, 8, 3, 10, True), (16, 120, 5, 5, True),
                                                    (4, 6, 3, 9, False)])
def test_counting_functions_match_paddle(c_in, c_out, k, side, bias):
    conv = paddle.nn.Conv2D(c_in, c_out, k, bias_attr=None if bias else False)
    summary = paddle.summary(conv, (1, c_in, side, side))
    assert conv2d_params(c_in, c_out, k, bias=bias) == summary["total_params"]
    scratch = Conv2DScratch(c_in, c_out, k, bias=bias)
    assert conv2d_params(c_in, c_out, k, bias=bias) == sum(int(p.numel()) for p in scratch.parameters())
    out = side - k + 1
    # paddle.flops adds one op per output for the bias; conv2d_macs(bias=False) is the pure MAC count.
    # paddle.flops counts sublayers only, so a bare layer must be wrapped to be counted.
    flops = paddle.flops(paddle.nn.Sequential(conv), [1, c_in, side, side], print_detail=False)
    assert conv2d_macs(c_in, c_out, k, out, out, bias=bias) == flops
    assert conv2d_macs(c_in, c_out, k, out, out) == c_out * c_in * k * k * out * out


def _lenet_pair():
    """lenet5 and lenet5_scratch, the scratch one loaded with lenet5's weights."""
    paddle.seed(3)
    reference = build_model("lenet5")
    scratch = build_model("lenet5_scratch")
    scratch.set_state_dict(reference.state_dict())
    return reference, scratch


def test_scratch_lenet_has_lenet5_state_dict_and_outputs():
    assert "lenet5_scratch" in model_names()
    reference, scratch = _lenet_pair()
    assert {key: v.shape for key, v in scratch.state_dict().items()} == \
        {key: v.shape for key, v in reference.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype("float32")
    # Longest path: forward sums of 25, 150, 400, 120 and 84 terms, then the backward's widest
    # weight-gradient sum (conv1: 4 images x 28x28 positions) and the input-gradient sums.
    chain = 25 + 150 + 400 + 120 + 84 + 4 * 28 * 28 + 84 + 120 + 400 + 150
    assert_network_within_rounding(lambda: build_model("lenet5"), reference.state_dict(), scratch, x, chain)


def test_scratch_lenet_counts_like_lenet5():
    reference, scratch = _lenet_pair()
    assert sum(int(p.numel()) for p in scratch.parameters()) == 61706
    expected = paddle.flops(reference, [1, 1, 32, 32], print_detail=False)
    assert paddle.flops(scratch, [1, 1, 32, 32], custom_ops=flops_counters(), print_detail=False) == expected


def test_run_ops_bench_times_every_op():
    rows = run_ops_bench(repeats=1, batch=2)
    assert {row["op"] for row in rows} == {"conv2d", "max_pool2d", "avg_pool2d"}
    for row in rows:
        assert row["scratch_ms"] > 0 and row["paddle_ms"] > 0
        assert row["ratio"] == pytest.approx(row["scratch_ms"] / row["paddle_ms"])
    table = format_ops_table(rows).splitlines()
    assert len(table) == len(rows) + 2
    assert all(row["shape"] in line for row, line in zip(rows, table[2:]))


def test_run_ops_bench_rejects_zero_repeats():
    with pytest.raises(ValueError, match="repeats"):
        run_ops_bench(repeats=0)
