"""VisualDL logging for one run: train and dev as two VisualDL runs, so their curves overlay.

Layout: <run_dir>/vdl/train and <run_dir>/vdl/dev, scalar tags on an epoch axis (epoch/loss,
epoch/acc in both; epoch/lr, epoch/images_per_s in train) plus step/loss per optimizer step and,
with train.log_grad_norms, grad_norm/<parameter> (L2 norm of that weight's gradient) on the step axis.
VisualDL reads only the newest record file of a directory, so a resumed run rewrites the log:
what the old file holds up to the resumed checkpoint is replayed into the new file, and nothing
after it, so no epoch is duplicated or lost.

Under paddle.distributed.launch only rank 0 logs; the other ranks get writers that discard everything.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import numpy as np

from . import rundir

SPLITS = ("train", "dev")
STEP_TAGS = ("step/", "grad_norm/")  # tags whose x axis is the global step, not the epoch


def _read_until(path: str, last_epoch: int, last_step: int) -> list[tuple[str, int, float, int]]:
    """Scalars of an old record file that belong to epochs <= last_epoch (steps <= last_step)."""
    from visualdl import LogReader

    try:
        reader = LogReader(file_path=path)
        rows = []
        for tag in reader.get_tags().get("scalar", []):
            limit = last_step if tag.startswith(STEP_TAGS) else last_epoch
            rows += [(tag, r.id, r.value, r.timestamp) for r in reader.get_data("scalar", tag) if r.id <= limit]
    except Exception:  # a record torn by kill -9: keep what metrics.jsonl can restore instead
        return []
    # A file cut short (killed while it was being replayed into) is as good as none.
    epochs = {step for tag, step, _, _ in rows if tag == "epoch/loss"}
    return rows if epochs >= set(range(1, last_epoch + 1)) else []


def read_step_scalars(run_dir, tags: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """Step-axis scalars of a run's training log (e.g. grad_norm/<parameter>), from its newest record file.

    Args:
        run_dir: the run directory.
        tags: the scalar tags wanted.
    Returns:
        tag -> (steps, values) in step order, for each wanted tag the log holds ({} without a log).
    """
    from visualdl import LogReader

    files = sorted(glob.glob(str(Path(run_dir) / rundir.VDL / "train" / "vdlrecords*")))
    if not files:
        return {}
    reader = LogReader(file_path=files[-1])
    present = set(reader.get_tags().get("scalar", []))
    out = {}
    for tag in (t for t in tags if t in present):
        records = sorted((r.id, r.value) for r in reader.get_data("scalar", tag))
        out[tag] = ([step for step, _ in records], [value for _, value in records])
    return out


class _DiscardWriter:
    """Stands in for a LogWriter on data-parallel ranks other than 0: every call does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class VdlLogger:
    """Writes a run's scalars, sample images and hyperparameters for VisualDL."""

    def __init__(self, run_dir: Path, resume_at: tuple[int, int] | None = None,
                 fallback_rows: list[dict] = ()):
        from visualdl import LogWriter

        from .runtime import rank

        self.writers = {}
        if rank() != 0:  # data-parallel: one run directory, written by rank 0 only
            self.writers = {split: _DiscardWriter() for split in SPLITS}
            return
        for split in SPLITS:
            logdir = Path(run_dir) / rundir.VDL / split
            old = sorted(glob.glob(str(logdir / "vdlrecords*")))
            replay = _read_until(old[-1], *resume_at) if (old and resume_at) else []
            # flush_secs: VisualDL's default of 120 s would hide a whole LeNet epoch from the board.
            # A name unique to the millisecond: VisualDL's own is per second, and a resume within
            # the same second would reopen (and then delete) the file it replaces.
            name = f"vdlrecords.{time.time_ns() // 1_000_000:013d}.log"
            self.writers[split] = LogWriter(logdir=str(logdir), file_name=name, flush_secs=5)
            for tag, step, value, walltime in replay:
                self.writers[split].add_scalar(tag, value, step, walltime=walltime)
            if resume_at and not replay:
                for row in fallback_rows:
                    self._epoch_scalars(split, row)
            self.writers[split].flush()  # the new file holds the history before the old one goes
            for path in old:
                if Path(path).name != name:
                    os.remove(path)

    def step_loss(self, global_step: int, loss: float) -> None:
        """Log one optimizer step's training loss.

        Args:
            global_step: steps since the start of training (1-based).
            loss: that batch's mean loss.
        """
        self.writers["train"].add_scalar("step/loss", loss, global_step)

    def grad_norms(self, global_step: int, norms: dict[str, float]) -> None:
        """Log the gradient L2 norm of each parameter for one optimizer step.

        Args:
            global_step: steps since the start of training (1-based).
            norms: parameter name -> norm of its gradient in that step.
        """
        for name, value in norms.items():
            self.writers["train"].add_scalar(f"grad_norm/{name}", value, global_step)

    def _epoch_scalars(self, split: str, row: dict) -> None:
        w, epoch = self.writers[split], row["epoch"]
        w.add_scalar("epoch/loss", row[f"{split}_loss"], epoch)
        w.add_scalar("epoch/acc", row[f"{split}_acc"], epoch)
        if split == "train":
            w.add_scalar("epoch/lr", row["lr"], epoch)
            w.add_scalar("epoch/images_per_s", row["images_per_s"], epoch)

    def epoch(self, row: dict) -> None:
        """Log one epoch's metrics (a metrics.jsonl row) and flush, so the board is current.

        Args:
            row: the epoch's metrics.
        """
        for split in SPLITS:
            self._epoch_scalars(split, row)
            self.writers[split].flush()

    def sample_images(self, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                      mean: list[float], std: list[float]) -> None:
        """Log a few training inputs (de-normalised) with their labels.

        Args:
            images: (N, C, H, W) normalised batch.
            labels: (N,) labels.
            class_names: names by label.
            mean: per-channel mean used for normalisation (pixel units).
            std: per-channel std (pixel units).
        """
        from .data import to_pixels

        for i, (hwc, label) in enumerate(zip(to_pixels(images, mean, std), labels)):
            if hwc.shape[2] == 1:
                hwc = np.repeat(hwc, 3, axis=2)
            self.writers["train"].add_image(f"inputs/{i}_{class_names[int(label)]}", hwc, 0)

    def hparams(self, hparams: dict, metrics: list[str]) -> None:
        """Record the run's settings for VisualDL's hyperparameter view.

        Args:
            hparams: flat name -> value (str/int/float/bool).
            metrics: scalar tags to show against them.
        """
        self.writers["train"].add_hparams(hparams, metrics)

    def close(self) -> None:
        """Flush and close both writers."""
        for w in self.writers.values():
            w.close()
