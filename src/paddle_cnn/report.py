"""Model reports (paddle.summary, paddle.flops) and matplotlib figures of a run's metrics."""

from __future__ import annotations

import contextlib
import io

import numpy as np

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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: list[dict], path, title: str) -> None:
    """Loss and accuracy per epoch, train and dev, as a two-panel PNG.

    Args:
        rows: metrics.jsonl rows (epoch, train_loss, train_acc, dev_loss, dev_acc).
        path: PNG to write.
        title: figure title (the run name).
    """
    from .fileio import atomic_write

    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train (epoch mean)")
    ax_loss.plot(epochs, [r["dev_loss"] for r in rows], "s--", label="dev")
    ax_loss.set(title="Cross-entropy loss", xlabel="epoch", ylabel="loss (nats per image)")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in rows], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["dev_acc"] for r in rows], "s--", label="dev")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def plot_comparison(curves: dict[str, list[list[dict]]], path, title: str) -> None:
    """Train loss and dev accuracy per epoch, one colour per variant, seeds as a min-max band.

    Args:
        curves: variant label -> list (one per seed) of metrics.jsonl rows.
        path: PNG to write.
        title: figure title.
    """
    from .fileio import atomic_write

    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (label, runs) in enumerate(curves.items()):
        color = f"C{i}"
        n = min(len(r) for r in runs)
        epochs = [row["epoch"] for row in runs[0][:n]]
        for ax, key, scale in ((ax_loss, "train_loss", 1), (ax_acc, "dev_acc", 100)):
            values = np.array([[row[key] * scale for row in r[:n]] for r in runs])
            ax.plot(epochs, values.mean(0), "o-", color=color, label=f"{label} (mean of {len(runs)})")
            if len(runs) > 1:
                ax.fill_between(epochs, values.min(0), values.max(0), color=color, alpha=0.2)
    ax_loss.set(title="Training loss (epoch mean)", xlabel="epoch", ylabel="loss (nats per image)")
    ax_acc.set(title="Dev accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title + ("  (bands: min-max over seeds)" if any(len(r) > 1 for r in curves.values()) else ""))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
