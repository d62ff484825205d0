"""Soft training targets: per-batch random erasing, mixup and cutmix, label smoothing, and the loss on them.

Semantics follow timm (RandomErasing, Mixup in its default "batch" mode): one mix weight per
batch, each image mixed with the image at the mirrored position (the batch reversed), cutmix's
weight corrected to the pasted box's true area, label smoothing folded into the targets
(on = 1 - eps + eps/K, off = eps/K). Erasing comes before mixing, as in timm's pipeline.

Reproducible and resumable: every draw comes from a generator keyed by (seed, epoch, step), so
a batch does not depend on what came before it, and a resumed run sees exactly the batches of an
uninterrupted one. BatchLoader calls the mixer on the whole global batch, so data-parallel ranks
draw the same numbers and each takes its slice.

The loss is here because it is the other half of the target format: the training loader yields
float (B, K) targets when mixing or smoothing is on, dev/test loaders int (B, 1) labels, and hapi
uses one loss object for fit and evaluate; CrossEntropy picks the form from the label, so dev and
test losses are the plain cross-entropy whatever the training config. (Paddle's own
CrossEntropyLoss(label_smoothing=...) would smooth dev too, and in Paddle 3.3.1 it fails on
(B, 1) int64 labels on CPU: no int64 label_smooth kernel.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import paddle
import paddle.nn.functional as F

from .config import Config, RandomErasingConfig

# Keys the per-step generator apart from the loader's per-epoch [seed, epoch] one ("mix" in ASCII).
MIX_STREAM = 0x6D6978
ERASE_ATTEMPTS = 10  # timm's: a drawn rectangle that does not fit is redrawn this often, then skipped


def step_generator(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator of one training batch's erasing and mixing.

    Args:
        seed: the run's seed.
        epoch: zero-based epoch.
        step: zero-based batch index within the epoch.
    Returns:
        A generator that depends on exactly these three numbers.
    """
    return np.random.default_rng([seed, epoch, step, MIX_STREAM])


@dataclass(frozen=True)
class BatchMixer:
    """Erase, mix and turn labels into soft targets for one whole (global) training batch."""

    num_classes: int
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    erasing: RandomErasingConfig = field(default_factory=RandomErasingConfig)

    @classmethod
    def from_config(cls, cfg: Config) -> BatchMixer | None:
        """The mixer a run's config asks for.

        Args:
            cfg: the run config.
        Returns:
            The mixer, or None when erasing, mixing and smoothing are all off.
        """
        a = cfg.data.augment
        mixer = cls(cfg.model.num_classes, cfg.loss.label_smoothing, a.mixup_alpha, a.cutmix_alpha,
                    a.mix_prob, a.switch_prob, a.random_erasing)
        return mixer if mixer.soft_targets or mixer.erasing.prob > 0 else None

    @property
    def mixes(self) -> bool:
        """Whether batches may be mixed (then train accuracy is against the dominant label)."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    @property
    def soft_targets(self) -> bool:
        """Whether labels become float (B, K) targets (mixing or smoothing on)."""
        return self.mixes or self.label_smoothing > 0

    def __call__(self, images: np.ndarray, labels: np.ndarray, key: tuple[int, int, int]):
        """Erase, mix, make targets.

        Args:
            images: (B, C, H, W) normalised batch (not modified).
            labels: (B,) int labels.
            key: (seed, epoch, step) of the batch: every draw comes from step_generator(*key).
        Returns:
            (images, targets): new images; targets float32 (B, K) rows summing to 1 when soft_targets,
            else the labels as int64 (B, 1).
        """
        rng = step_generator(*key)
        images = images.copy()
        if self.erasing.prob > 0:
            random_erase(images, rng, self.erasing)
        if not self.soft_targets:
            return images, labels.astype("int64").reshape(-1, 1)
        lam, use_cutmix = self._batch_params(rng)
        if use_cutmix:
            lam = cutmix(images, lam, rng)
        elif lam < 1.0:
            images = mixup(images, lam)
        return images, soft_targets(labels, self.num_classes, lam, self.label_smoothing)

    def _batch_params(self, rng: np.random.Generator) -> tuple[float, bool]:
        """timm's Mixup._params_per_batch: (mix weight of the image itself, whether cutmix)."""
        if not self.mixes or rng.random() >= self.mix_prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix


def mixup(images: np.ndarray, lam: float) -> np.ndarray:
    """Blend each image with its partner in the reversed batch.

    Args:
        images: (B, C, H, W) batch.
        lam: weight of the image itself.
    Returns:
        lam * x + (1 - lam) * x[::-1], float32.
    """
    lam32 = np.float32(lam)
    return images * lam32 + images[::-1] * (np.float32(1.0) - lam32)


def cutmix(images: np.ndarray, lam: float, rng: np.random.Generator) -> float:
    """Paste a box of each partner image (reversed batch) into each image, in place (timm's rand_bbox).

    Args:
        images: (B, C, H, W) batch, modified.
        lam: drawn weight; the box covers about 1 - lam of the image, centred anywhere, clipped.
        rng: the batch's generator.
    Returns:
        The weight corrected to the clipped box: 1 - box area / image area.
    """
    h, w = images.shape[2:]
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, h)
    x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, w)
    images[:, :, y0:y1, x0:x1] = images[::-1, :, y0:y1, x0:x1].copy()
    return 1.0 - float((y1 - y0) * (x1 - x0)) / (h * w)


def soft_targets(labels: np.ndarray, num_classes: int, lam: float, smoothing: float) -> np.ndarray:
    """timm's mixup_target: smoothed one-hot rows, mixed with the reversed batch's.

    Args:
        labels: (B,) int labels.
        num_classes: K.
        lam: weight of each image's own label.
        smoothing: label smoothing eps.
    Returns:
        float32 (B, K); each row sums to 1.
    """
    off = smoothing / num_classes
    one_hot = np.full((len(labels), num_classes), off)
    one_hot[np.arange(len(labels)), labels] = 1.0 - smoothing + off
    return (lam * one_hot + (1.0 - lam) * one_hot[::-1]).astype("float32")


def random_erase(images: np.ndarray, rng: np.random.Generator, cfg: RandomErasingConfig) -> None:
    """timm's RandomErasing on each image of a batch, in place.

    Args:
        images: (B, C, H, W) normalised batch, modified.
        rng: the batch's generator.
        cfg: probability, area and aspect ranges, fill mode.
    """
    b, c, h, w = images.shape
    log_aspect = np.log(cfg.aspect)
    for i in np.flatnonzero(rng.random(b) < cfg.prob):
        for _ in range(ERASE_ATTEMPTS):
            area = rng.uniform(*cfg.area) * h * w
            aspect = np.exp(rng.uniform(*log_aspect))
            eh, ew = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if eh < h and ew < w:
                top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                fill = rng.standard_normal((c, eh, ew), dtype=np.float32) if cfg.mode == "pixel" else 0.0
                images[i, :, top:top + eh, left:left + ew] = fill
                break


def cross_entropy(logits: paddle.Tensor, label: paddle.Tensor, reduction: str = "mean") -> paddle.Tensor:
    """Cross-entropy on int labels (B, 1) or on soft float targets (B, K).

    Args:
        logits: (B, K) network outputs.
        label: int labels, or float targets whose rows sum to 1.
        reduction: "mean" or "sum" over the batch.
    Returns:
        The scalar loss.
    """
    return F.cross_entropy(logits, label, reduction=reduction, soft_label=paddle.is_floating_point(label))


class CrossEntropy(paddle.nn.Layer):
    """hapi's loss: the cross-entropy of whatever target form the loader yields (see the module docstring)."""

    def forward(self, logits, label):
        """Mean loss of a batch.

        Args:
            logits: (B, K) network outputs.
            label: (B, 1) int labels or (B, K) float targets.
        Returns:
            A scalar tensor.
        """
        return cross_entropy(logits, label)
