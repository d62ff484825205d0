"""Model reports: paddle.summary and paddle.flops, with MACs labelled as what they are."""

from __future__ import annotations

import contextlib
import io

MACS_NOTE = (
    "MACs = multiply-accumulates per image as counted by paddle.flops (it calls them FLOPs); "
    "one MAC is about 2 floating-point operations. paddle.flops also adds 2 per BatchNorm output and "
    "counts max-pool, residual additions, sigmoid and tanh as zero."
)


def count_macs(net, input_shape: tuple[int, int, int], print_detail: bool = False) -> int:
    """paddle.flops of one image, with fast_conv's FastConv2D counted as the conv it is.

    Args:
        net: the paddle.nn.Layer (a forward pass runs: BatchNorm statistics move).
        input_shape: (C, H, W) of one input image.
        print_detail: paddle.flops's per-layer table on stdout.
    Returns:
        Multiply-accumulates per image.
    """
    import paddle

    from . import fast_conv

    return int(paddle.flops(net, [1, *input_shape], custom_ops=fast_conv.FLOPS_CUSTOM_OPS,
                            print_detail=print_detail))


def model_report(net, input_shape: tuple[int, int, int]) -> tuple[str, dict]:
    """paddle.summary and paddle.flops for one network, as text and as numbers.

    Runs a forward pass: pass a network that is not the one being trained (BatchNorm running
    statistics would move).

    Args:
        net: the paddle.nn.Layer.
        input_shape: (C, H, W) of one input image.
    Returns:
        (report text, {"total_params", "trainable_params", "macs", "input_shape"}).
    """
    import paddle

    shape = (1, *input_shape)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        summary = paddle.summary(net, shape)
        macs = count_macs(net, input_shape, print_detail=True)
    numbers = {
        "input_shape": list(input_shape),
        "total_params": int(summary["total_params"]),
        "trainable_params": int(summary["trainable_params"]),
        "macs": int(macs),
        "macs_note": MACS_NOTE,
    }
    text = (
        f"{buf.getvalue()}\n"
        f"Total params:     {numbers['total_params']:,} (paddle.summary; includes BatchNorm running stats)\n"
        f"Trainable params: {numbers['trainable_params']:,}\n"
        f"MACs per image:   {numbers['macs']:,} at input {tuple(input_shape)}\n{MACS_NOTE}\n"
    )
    return text, numbers
