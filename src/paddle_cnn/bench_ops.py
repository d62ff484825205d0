"""Forward-time comparison of the from-scratch operators (paddle_cnn.ops) with paddle.nn's.

Both sides run in the same process on the same input, under paddle.no_grad() so that only the
forward computation is timed, one untimed warm-up call first (first-call kernel selection and
allocation would otherwise dominate a median of few repeats).
"""

from __future__ import annotations

import statistics
import time
import paddle
import paddle.nn as nn

from .ops import AvgPool2DScratch, Conv2DScratch, MaxPool2DScratch

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


def _median_ms(layer: nn.Layer, x: paddle.Tensor, repeats: int) -> float:
    """Median wall time of layer(x) in milliseconds.

    Args:
        layer: layer to time. x: its input. repeats: timed calls, after one untimed warm-up call.
    Returns:
        Median of the timed calls, in ms.
    """
    layer(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        layer(x)
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
            scratch_ms = _median_ms(scratch, x, repeats)
            paddle_ms = _median_ms(reference, x, repeats)
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
