"""Every figure the project draws: training curves, comparisons, confusion matrices, prediction grids.

matplotlib is imported on first use, with the file-only Agg backend (training machines have no
display), and every PNG is written atomically by save_figure.
"""

from __future__ import annotations

import math

import numpy as np

from .fileio import atomic_write

WRONG_COLOR, RIGHT_COLOR = "#d62728", "#2a7a2a"


def pyplot():
    """matplotlib.pyplot on the Agg backend.

    Returns:
        The pyplot module.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    """Write a figure as PNG atomically and free it.

    Args:
        fig: a matplotlib figure.
        path: the PNG to write.
    """
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    pyplot().close(fig)


def _mean_band(ax, x, values: np.ndarray, color, label: str, style: str = "o-", mean=None) -> None:
    """One variant's line: the mean over seeds (the rows of values) and, with 2+ seeds, a min-max band."""
    ax.plot(x, values.mean(0) if mean is None else mean, style, color=color, label=f"{label} (mean of {len(values)})")
    if len(values) > 1:
        ax.fill_between(x, values.min(0), values.max(0), color=color, alpha=0.2)


def plot_curves(rows: list[dict], path, title: str) -> None:
    """Loss and accuracy per epoch, train and dev, as a two-panel PNG.

    Args:
        rows: metrics.jsonl rows (epoch, train_loss, train_acc, dev_loss, dev_acc).
        path: PNG to write.
        title: figure title (the run name).
    """

    plt = pyplot()
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
    save_figure(fig, path)


def plot_comparison(curves: dict[str, list[list[dict]]], path, title: str) -> None:
    """Train loss and dev accuracy per epoch, one colour per variant, seeds as a min-max band.

    Args:
        curves: variant label -> list (one per seed) of metrics.jsonl rows.
        path: PNG to write.
        title: figure title.
    """

    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (label, runs) in enumerate(curves.items()):
        color = f"C{i}"
        n = min(len(r) for r in runs)
        epochs = [row["epoch"] for row in runs[0][:n]]
        for ax, key, scale in ((ax_loss, "train_loss", 1), (ax_acc, "dev_acc", 100)):
            _mean_band(ax, epochs, np.array([[row[key] * scale for row in r[:n]] for r in runs]), color, label)
    ax_loss.set(title="Training loss (epoch mean)", xlabel="epoch", ylabel="loss (nats per image)")
    ax_acc.set(title="Dev accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title + ("  (bands: min-max over seeds)" if any(len(r) > 1 for r in curves.values()) else ""))
    fig.tight_layout()
    save_figure(fig, path)


def plot_comparison_grid(panels: dict[str, dict[str, list[list[dict]]]], path, title: str) -> None:
    """A two-axis comparison as He et al.'s Figure 6: one column per arm, colours for the other axis.

    Top row training error, bottom row dev error, in % per epoch (solid: mean over seeds; band:
    min-max); the y axes are shared so panels compare at a glance.

    Args:
        panels: panel title -> colour label -> list (one per seed) of metrics.jsonl rows.
        path: PNG to write.
        title: figure title.
    """
    plt = pyplot()
    fig, axes = plt.subplots(2, len(panels), figsize=(5.2 * len(panels), 7.4), sharey="row", squeeze=False)
    for col, (panel, series) in enumerate(panels.items()):
        for i, (label, runs) in enumerate(series.items()):
            n = min(len(r) for r in runs)
            epochs = [row["epoch"] for row in runs[0][:n]]
            for row_ax, key in ((axes[0, col], "train_acc"), (axes[1, col], "dev_acc")):
                err = np.array([[100 * (1 - row[key]) for row in r[:n]] for r in runs])
                _mean_band(row_ax, epochs, err, f"C{i}", label)
        axes[0, col].set_title(panel)
        for row_ax, what in ((axes[0, col], "training"), (axes[1, col], "dev")):
            row_ax.set(xlabel="epoch", ylabel=f"{what} error (%)")
            row_ax.grid(alpha=0.3)
            row_ax.legend(fontsize=8)
            row_ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title + "  (training error: during each epoch, augmented; bands: min-max over seeds)")
    fig.tight_layout()
    save_figure(fig, path)


def plot_grad_norms(panels: dict[str, dict[str, list[tuple[list, list]]]], path, title: str) -> None:
    """Gradient L2 norm against the optimizer step, one panel per layer, one colour per variant.

    Log y axis (norms span orders of magnitude); solid: geometric mean over seeds at the steps all
    seeds logged; band: min-max.

    Args:
        panels: panel title -> variant label -> list (one per seed) of (steps, norms).
        path: PNG to write.
        title: figure title.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for i, (label, runs) in enumerate(series.items()):
            steps = sorted(set.intersection(*(set(s) for s, _ in runs)))
            norms = np.array([[dict(zip(s, v))[step] for step in steps] for s, v in runs])
            geometric = np.exp(np.log(np.maximum(norms, 1e-30)).mean(0))  # a log axis: the mean of the logs
            _mean_band(ax, steps, norms, f"C{i}", label, style="-", mean=geometric)
        ax.set_yscale("log")
        ax.set(title=panel, xlabel="optimizer step", ylabel="gradient L2 norm of the weight")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title + ("  (bands: min-max over seeds)" if any(len(r) > 1 for s in panels.values()
                                                                  for r in s.values()) else ""))
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion(matrix: np.ndarray, names: list[str], path, title: str) -> None:
    """Draw a confusion matrix: counts in the cells, blue diagonal, red errors, shade = share of the row.

    Args:
        matrix: (K, K) counts, rows = true class, columns = predicted.
        names: class names.
        path: PNG to write.
        title: figure title.
    """
    plt = pyplot()
    k = len(names)
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)  # by row, so a small class's errors are as visible as a big one's
    diagonal = np.eye(k, dtype=bool)
    # Errors are often 0.1% of a row: a square root lifts them off white without hiding the scale.
    colours = np.where(diagonal[..., None], plt.get_cmap("Blues")(share), plt.get_cmap("Reds")(np.sqrt(share) * 0.8))
    fig, ax = plt.subplots(figsize=(2.4 + 0.62 * k, 1.7 + 0.55 * k), layout="constrained")
    colours[matrix == 0] = (1.0, 1.0, 1.0, 1.0)
    ax.imshow(colours)
    for i in range(k):
        for j in range(k):
            count = int(matrix[i, j])
            dark = share[i, j] > 0.55 if i == j else np.sqrt(share[i, j]) * 0.8 > 0.55
            color = "white" if dark else ("#aaaaaa" if count == 0 else "black")
            ax.text(j, i, str(count), ha="center", va="center", fontsize=9 if count < 1000 else 8, color=color)
    long_names = max(len(s) for s in names) > 3
    ax.set_xticks(range(k), names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted class", ylabel="true class")
    right = ax.secondary_yaxis("right")  # per-class accuracy next to each row, where the eye already is
    right.set_yticks(range(k), [f"{100 * matrix[i, i] / rows[i, 0]:.1f}%" if rows[i, 0] else "-" for i in range(k)])
    right.set_ylabel("per-class accuracy (diagonal / row)")
    ax.set_title(f"{title}\nblue: correct, red: wrong; shade: share of the true class", fontsize=10)
    save_figure(fig, path)


def plot_grid(pixels: np.ndarray, true: list[str], pred: list[str], path, title: str) -> None:
    """A grid of images titled "pred X / true Y"; wrong ones get a red title and a red frame.

    Args:
        pixels: uint8 (N, H, W, C) images (C = 1 is drawn grey).
        true: true class name per image.
        pred: predicted class name per image.
        path: PNG to write.
        title: figure title.
    """
    plt = pyplot()
    n = len(pixels)
    ncols = min(n, max(4, math.ceil(math.sqrt(n))), 10)
    nrows = math.ceil(n / ncols)
    labels = [f"pred {p} / true {t}" for t, p in zip(true, pred)]
    if max(len(s) for s in labels) > 20:  # long CIFAR names: two lines keep the columns narrow
        labels = [s.replace(" / ", " /\n") for s in labels]
    title_lines = max(s.count("\n") + 1 for s in labels)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.75 * ncols, (1.75 + 0.2 * title_lines) * nrows + 0.7),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, img, t, p, label in zip(axes.flat, pixels, true, pred, labels):
        wrong = t != p
        if img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])  # ticks off but spines kept: the spines are the frame
        ax.set_title(label, fontsize=9, color=WRONG_COLOR if wrong else RIGHT_COLOR,
                     fontweight="bold" if wrong else "normal")
        for spine in ax.spines.values():
            spine.set_edgecolor(WRONG_COLOR if wrong else "#bbbbbb")
            spine.set_linewidth(4 if wrong else 0.8)
    fig.suptitle(title + "\nred title and frame: wrong prediction", fontsize=11)
    save_figure(fig, path)
