"""From-scratch conv/pool operators against paddle.nn: outputs, gradients, size rule, counts, LeNet, bench."""

import numpy as np
import paddle
import pytest

from paddle_cnn.bench_ops import format_ops_table, run_ops_bench
from paddle_cnn.ops import (AvgPool2DScratch, Conv2DScratch, MaxPool2DScratch, conv2d_macs,
                            conv2d_params, flops_counters, output_size)
from paddle_cnn.registry import build_model, model_names

TOL = {"rtol": 1e-5, "atol": 1e-5}

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
    """Run layer on a copy of x_np and backpropagate sum(out * upstream); return out, x.grad."""
    x = paddle.to_tensor(x_np, stop_gradient=False)
    out = layer(x)
    (out * paddle.to_tensor(upstream)).sum().backward()
    return out.numpy(), x.grad.numpy()


def _compare(scratch, reference, x_shape, seed):
    """Assert scratch and reference layers agree on output and input gradient; return out shape."""
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal(x_shape).astype("float32")
    out_shape = reference(paddle.to_tensor(x_np)).shape
    # A random upstream gradient, not ones, so a transposed or shifted gradient cannot pass.
    upstream = rng.standard_normal(out_shape).astype("float32")
    ref_out, ref_dx = _forward_backward(reference, x_np, upstream)
    out, dx = _forward_backward(scratch, x_np, upstream)
    assert out.shape == ref_out.shape
    np.testing.assert_allclose(out, ref_out, **TOL)
    np.testing.assert_allclose(dx, ref_dx, **TOL)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,c_in,c_out,h,w,k,s,p", CONV_CASES)
def test_conv_matches_paddle(n, c_in, c_out, h, w, k, s, p, bias):
    reference = paddle.nn.Conv2D(c_in, c_out, k, stride=s, padding=p, bias_attr=None if bias else False)
    scratch = Conv2DScratch(c_in, c_out, k, stride=s, padding=p, bias=bias)
    assert {key: v.shape for key, v in scratch.state_dict().items()} == \
        {key: v.shape for key, v in reference.state_dict().items()}
    if bias:
        # The default bias is zero; a random one checks it is added per output channel.
        reference.bias.set_value(paddle.randn([c_out]))
    scratch.set_state_dict(reference.state_dict())
    _compare(scratch, reference, (n, c_in, h, w), seed=k * 100 + s * 10 + p)
    np.testing.assert_allclose(scratch.weight.grad.numpy(), reference.weight.grad.numpy(), **TOL)
    if bias:
        np.testing.assert_allclose(scratch.bias.grad.numpy(), reference.bias.grad.numpy(), **TOL)


@pytest.mark.parametrize("n,c,h,w,k,s,p", POOL_CASES)
def test_max_pool_matches_paddle(n, c, h, w, k, s, p):
    _compare(MaxPool2DScratch(k, s, p), paddle.nn.MaxPool2D(k, s, p), (n, c, h, w), seed=k + s + p)


@pytest.mark.parametrize("exclusive", [True, False])
@pytest.mark.parametrize("n,c,h,w,k,s,p", POOL_CASES)
def test_avg_pool_matches_paddle(n, c, h, w, k, s, p, exclusive):
    reference = paddle.nn.AvgPool2D(k, s, p, exclusive=exclusive)
    _compare(AvgPool2DScratch(k, s, p, exclusive=exclusive), reference, (n, c, h, w), seed=k + s + p)


def test_pool_stride_defaults_to_kernel_like_paddle():
    x = paddle.randn([1, 2, 6, 6])
    np.testing.assert_allclose(MaxPool2DScratch(3)(x).numpy(), paddle.nn.MaxPool2D(3)(x).numpy(), **TOL)
    np.testing.assert_allclose(AvgPool2DScratch(3)(x).numpy(), paddle.nn.AvgPool2D(3)(x).numpy(), **TOL)


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
    ref_logits = reference(paddle.to_tensor(x))
    logits = scratch(paddle.to_tensor(x))
    np.testing.assert_allclose(logits.numpy(), ref_logits.numpy(), **TOL)
    ref_logits.sum().backward()
    logits.sum().backward()
    ref_params = dict(reference.named_parameters())
    for name, param in scratch.named_parameters():
        np.testing.assert_allclose(param.grad.numpy(), ref_params[name].grad.numpy(), **TOL,
                                   err_msg=name)


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
