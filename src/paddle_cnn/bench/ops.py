"""Forward-time comparison of the from-scratch operators (paddle_cnn.scratch_ops) with paddle.nn's.

Both sides run in the same process on the same input, under paddle.no_grad() so that only the
forward computation is timed, one untimed warm-up call first (first-call kernel selection and
allocation would otherwise dominate a median of few repeats).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import paddle
import paddle.nn as nn

from .. import fast_conv, onednn_conv
from ..scratch_ops import AvgPool2DScratch, Conv2DScratch, MaxPool2DScratch

# (op, channels in, channels out, side, kernel, stride, padding): LeNet's layers on its 32x32 input
# plus a ResNet-style 64->64 3x3 stage at CIFAR resolution, where the cost of a Python loop over
# kernel taps is small next to the arithmetic.
_CASES = [
    ("conv2d", 1, 6, 32, 5, 1, 0),
    ("conv2d", 64, 64, 32, 3, 1, 1),
    ("max_pool2d", 6, 6, 28, 2, 2, 0),
    ("max_pool2d", 64, 64, 32, 3, 1, 1),
    ("avg_pool2d", 16, 16, 10, 2, 2, 0),
    ("avg_pool2d", 64, 64, 32, 2, 2, 0),
]


def _layer_pair(op: str, c_in: int, c_out: int, k: int, s: int, p: int) -> tuple[nn.Layer, nn.Layer]:
    """Build the scratch layer and the paddle.nn layer for one case, with identical weights.

    Args:
        op: "conv2d", "max_pool2d" or "avg_pool2d". c_in, c_out: channels. k, s, p: kernel, stride, padding.
    Returns:
        (scratch layer, paddle.nn layer).
    """
    if op == "conv2d":
        reference = nn.Conv2D(c_in, c_out, k, stride=s, padding=p)
        scratch = Conv2DScratch(c_in, c_out, k, stride=s, padding=p)
        scratch.set_state_dict(reference.state_dict())
        return scratch, reference
    if op == "max_pool2d":
        return MaxPool2DScratch(k, s, p), nn.MaxPool2D(k, s, p)
    if op == "avg_pool2d":
        return AvgPool2DScratch(k, s, p), nn.AvgPool2D(k, s, p)
    raise ValueError(f"unknown op {op!r}; valid: conv2d, max_pool2d, avg_pool2d.")


def _median_ms(run, repeats: int) -> float:
    """Median wall time of run() in milliseconds.

    Args:
        run: the call to time. repeats: timed calls, after one untimed warm-up call.
    Returns:
        Median of the timed calls, in ms.
    """
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_ops_bench(repeats: int = 5, batch: int = 16) -> list[dict]:
    """Time the scratch conv / max-pool / avg-pool forward against paddle.nn's on representative shapes.

    Args:
        repeats: timed forward calls per operator (median reported), warm-up excluded.
        batch: batch size of the random input.
    Returns:
        One dict per case: op, shape (a readable description), scratch_ms, paddle_ms,
        ratio (scratch_ms / paddle_ms).
    """
    if repeats < 1 or batch < 1:
        raise ValueError(f"repeats and batch must be at least 1, got repeats={repeats}, batch={batch}.")
    rows = []
    for op, c_in, c_out, side, k, s, p in _CASES:
        scratch, reference = _layer_pair(op, c_in, c_out, k, s, p)
        x = paddle.randn([batch, c_in, side, side])
        with paddle.no_grad():
            scratch_ms = _median_ms(lambda: scratch(x), repeats)
            paddle_ms = _median_ms(lambda: reference(x), repeats)
        channels = f"{c_in}->{c_out} " if op == "conv2d" else ""
        rows.append({
            "op": op,
            "shape": f"{batch}x{c_in}x{side}x{side}, {channels}k{k} s{s} p{p}",
            "scratch_ms": scratch_ms,
            "paddle_ms": paddle_ms,
            "ratio": scratch_ms / paddle_ms,
        })
    return rows


def format_ops_table(rows: list[dict]) -> str:
    """Render run_ops_bench rows as a Markdown table.

    Args:
        rows: output of run_ops_bench.
    Returns:
        The table, one line per row, with a header; ratio > 1 means the scratch operator is slower.
    """
    lines = ["| op | input, layer | scratch ms | paddle ms | scratch / paddle |",
             "|---|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['op']} | {row['shape']} | {row['scratch_ms']:.3f} | "
                     f"{row['paddle_ms']:.3f} | {row['ratio']:.1f}x |")
    return "\n".join(lines)


# (label, channels in, channels out, input side, kernel, stride, padding): the convs of LeNet on
# 28x28 and of ResNet18 on 32x32 (ImageNet stem: 16x16 down to 1x1; CIFAR stem: 32x32 down to 4x4),
# two in-between sizes that place fast_conv's threshold, and 1x1 convs as in GoogLeNet and NiN.
_CONV_CASES = [
    ("lenet conv1", 1, 6, 28, 5, 1, 2),
    ("lenet conv3", 6, 16, 14, 5, 1, 0),
    ("lenet conv5", 16, 120, 5, 5, 1, 0),
    ("resnet18 stem", 3, 64, 32, 7, 2, 3),
    ("resnet18 8x8", 64, 64, 8, 3, 1, 1),
    ("resnet18 4x4", 128, 128, 4, 3, 1, 1),
    ("resnet18 2x2", 256, 256, 2, 3, 1, 1),
    ("resnet18 1x1", 512, 512, 1, 3, 1, 1),
    ("resnet18 projection", 128, 256, 4, 1, 2, 0),
    ("resnet18:cifar 32x32", 64, 64, 32, 3, 1, 1),
    ("resnet18:cifar 4x4", 512, 512, 4, 3, 1, 1),
    ("64x6x6", 64, 64, 6, 3, 1, 1),
    ("16x16x16", 16, 16, 16, 3, 1, 1),
    ("googlenet 1x1 4x4", 832, 48, 4, 1, 1, 0),
    ("googlenet 1x1 2x2", 512, 512, 2, 1, 1, 0),
    ("resnet20-110 stage 1", 16, 16, 32, 3, 1, 1),  # He et al.'s CIFAR ResNets (the depth study)
    ("resnet20-110 stage 2", 32, 32, 16, 3, 1, 1),
]



def _train_ms(conv, layer: nn.Layer, x: paddle.Tensor, upstream: paddle.Tensor, repeats: int) -> float:
    """Median ms of conv(layer, x) forward plus backward to x and the weights (see _median_ms)."""
    def run():
        (conv(layer, x) * upstream).sum().backward()
        layer.clear_gradients()
        x.clear_gradient()

    return _median_ms(run, repeats)


def run_conv_bench(repeats: int = 5, batch: int = 128) -> list[dict]:
    """Time fast_conv's batch-GEMM conv against paddle's conv kernel, forward + backward, per layer shape.

    Args:
        repeats: timed steps per side (median reported), warm-up excluded.
        batch: batch size of the random input.
    Returns:
        One dict per case: layer, shape, paddle_ms, gemm_ms, ratio (gemm / paddle), onednn_ms
        (None without the operator), gemm_path (what conv_kernel gemm takes: gemm or paddle) and
        fast_conv_path (what train's default takes: onednn, "onednn dense" for a global-window conv, or
        gemm_path).
    """
    if repeats < 1 or batch < 1:
        raise ValueError(f"repeats and batch must be at least 1, got repeats={repeats}, batch={batch}.")
    use_onednn = fast_conv.use_onednn("auto")
    with_onednn = onednn_conv.load() is not None
    rows = []
    for label, c_in, c_out, side, k, s, p in _CONV_CASES:
        layer = nn.Conv2D(c_in, c_out, k, stride=s, padding=p)
        x = paddle.randn([batch, c_in, side, side])
        x.stop_gradient = False
        out_h, out_w = fast_conv.output_size(layer, x.shape)
        upstream = paddle.to_tensor(np.random.default_rng(0).standard_normal(
            (batch, c_out, out_h, out_w)).astype(np.float32))
        paddle_ms = _train_ms(fast_conv.paddle_conv, layer, x, upstream, repeats)
        gemm_ms = _train_ms(fast_conv.gemm_conv, layer, x, upstream, repeats)
        onednn_ms = _train_ms(fast_conv.dnnl_conv, layer, x, upstream, repeats) if with_onednn else None
        gemm_path = "gemm" if fast_conv.takes_gemm(layer, x.shape) else "paddle"
        onednn_path = "onednn dense" if fast_conv.global_window(layer, x.shape) else "onednn"
        rows.append({"layer": label, "shape": f"{c_in}x{side}x{side} -> {c_out}x{out_h}x{out_w}, k{k} s{s}",
                     "paddle_ms": paddle_ms, "gemm_ms": gemm_ms, "ratio": gemm_ms / paddle_ms,
                     "onednn_ms": onednn_ms, "gemm_path": gemm_path,
                     "fast_conv_path": onednn_path if use_onednn else gemm_path})
    return rows


def format_conv_table(rows: list[dict]) -> str:
    """Render run_conv_bench rows as a Markdown table.

    Args:
        rows: output of run_conv_bench.
    Returns:
        The table; ratio < 1 means the batch GEMM is faster than paddle's kernel.
    """
    lines = ["| layer | input -> output | paddle conv ms | batch GEMM ms | GEMM / paddle | oneDNN ms | "
             "oneDNN / paddle | fast_conv uses |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        onednn = row.get("onednn_ms")
        cells = (f"{onednn:.1f} | {onednn / row['paddle_ms']:.2f}x" if onednn is not None else "n/a | n/a")
        lines.append(f"| {row['layer']} | {row['shape']} | {row['paddle_ms']:.1f} | {row['gemm_ms']:.1f} | "
                     f"{row['ratio']:.2f}x | {cells} | {row['fast_conv_path']} |")
    return "\n".join(lines)
