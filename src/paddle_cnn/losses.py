"""The training loss: cross-entropy with optional label smoothing; evaluation is always plain.

Why not paddle's own: in Paddle 3.3.1, `F.cross_entropy(..., label_smoothing=x)` with the (n, 1)
int64 labels hapi passes fails ("kernel label_smooth ... int64 is not registered"). The smoothed
loss is written out instead: (1 - eps) * NLL + eps * mean over classes of -log p, which is the
cross-entropy against the target (1 - eps) * one_hot + eps / K.

Dev and test losses stay plain cross-entropy whatever the training loss is, so they compare
across configs; "evaluation" is recognised by gradients being off, as hapi's eval runs do.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F


def cross_entropy_sum(logits: paddle.Tensor, label: paddle.Tensor, label_smoothing: float = 0.0) -> paddle.Tensor:
    """Summed cross-entropy of a batch, label-smoothed while gradients are on.

    Args:
        logits: (n, K) network outputs.
        label: (n, 1) int64 class indices.
        label_smoothing: eps in [0, 1); ignored in evaluation (no gradient).
    Returns:
        A scalar tensor: the sum over the batch.
    """
    nll = F.cross_entropy(logits, label, reduction="sum")
    if not label_smoothing or not paddle.is_grad_enabled():
        return nll
    uniform = -F.log_softmax(logits, axis=-1).mean(axis=-1).sum()
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform


class TrainingLoss(paddle.nn.Layer):
    """The batch-mean of cross_entropy_sum: what paddle.Model.prepare gets as its loss."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits, label):
        """Mean loss of one batch.

        Args:
            logits: (n, K) outputs.
            label: (n, 1) int64 labels.
        Returns:
            A scalar tensor.
        """
        return cross_entropy_sum(logits, label, self.label_smoothing) / int(label.shape[0])
