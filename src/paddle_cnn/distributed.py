"""Data-parallel training under `python -m paddle.distributed.launch`: what hapi leaves to us.

paddle.Model already does the core: with more than one process it calls init_parallel_env() and
wraps the network in paddle.DataParallel, whose backward all-reduces (averages) the gradients; on
CPU this runs over gloo, and the weights stay bitwise identical on every rank (checked below
every epoch). What hapi does NOT do for an in-memory loader like data.BatchLoader, and this module
does:

- Gradient of the global batch. DataParallel averages per-rank gradients, which is the gradient of
  the global-batch mean only when every rank holds the same number of samples. GlobalMeanLoss
  scales each rank's loss by its share, so uneven shards (an odd batch size, the last batch of an
  epoch) are exact too, and it reports the global-batch mean as the loss value (one all-reduce of
  three numbers per step: loss sum, sample count, stop flag).
- Train accuracy. hapi computes metrics in training on the rank's own shard only: DistributedSync
  all-reduces (correct, seen) at each epoch end. The accuracy on the per-step progress line stays
  rank 0's shard.
- Evaluation. Every rank evaluates the whole dev/test split with identical weights (the loaders
  are not sharded), so the numbers equal a single-process evaluation of the same checkpoint. hapi
  all-gathers eval outputs, duplicating every sample world-size times; accuracy is unchanged by
  that (correct and seen both scale) and batch_samples() undoes the inflated batch size.
- BatchNorm. DataParallel syncs the running statistics only once, at wrap time, and each rank
  normalises with its own shard's statistics (SyncBatchNorm has no CPU kernel: "sync_batch_norm
  is not registered"). DistributedSync averages the running
  mean/variance across ranks before every evaluation and checkpoint, so all ranks agree, but
  models with BatchNorm do not train bit-for-bit like one process with the global batch.
- Files. Only rank 0 writes (fileio and vdl check runtime.rank()); the other ranks read what
  rank 0 wrote only after the barrier at the end of training.
- Ctrl-C. The launcher answers it with SIGTERM to every rank. A rank that left at once would
  leave the others blocked in a collective, where gloo aborts them from C++. So during fit()
  SIGTERM only raises a flag, which travels with the loss all-reduce: every rank sees it at the
  same step and raises KeyboardInterrupt there, before that step's update, and the run ends as an
  interrupted single-process run does (last complete epoch kept, resumable).
"""

from __future__ import annotations

import hashlib
import signal

import numpy as np
import paddle
import paddle.distributed as dist

from . import compat, mixing, runtime
from .errors import TrainingFailed

_STOP = {"requested": False}  # set by SIGTERM during fit(), acted on by every rank at the same step


class StopRequested(KeyboardInterrupt):
    """Every rank stops at the same step because one of them was asked to (SIGTERM)."""


def _request_stop(signum, frame) -> None:
    _STOP["requested"] = True


def world_size() -> int:
    """Processes in the job (1 without the launcher).

    Returns:
        The world size.
    """
    return runtime.world_size()


def rank() -> int:
    """This process's rank (0 without the launcher).

    Returns:
        The global rank.
    """
    return runtime.rank()


def barrier() -> None:
    """Wait until every rank arrives here (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


class GlobalMeanLoss(paddle.nn.Layer):
    """Cross-entropy whose value is the global-batch mean and whose gradient, after DataParallel's
    average over ranks, is exactly the gradient of that mean, however the batch is split.
    Labels as mixing.CrossEntropy takes them: int labels or soft targets.

    In evaluation (no gradient) each rank holds a whole batch: the value is its plain mean.
    """

    def __init__(self, world: int):
        super().__init__()
        self.world = world
        self.count = 0  # samples behind the last value returned

    def forward(self, logits, label):
        """Loss of one (shard of a) batch.

        Args:
            logits: (n, classes) network outputs.
            label: (n, 1) int64 labels, or (n, classes) float soft targets (mixing.py).
        Returns:
            A scalar tensor.
        """
        local_sum = mixing.cross_entropy(logits, label, reduction="sum")
        n = int(label.shape[0])
        if not paddle.is_grad_enabled():
            self.count = n
            return local_sum / n
        extra = paddle.to_tensor([float(n), float(_STOP["requested"])], "float32")
        totals = paddle.concat([local_sum.detach().astype("float32").reshape([1]), extra])
        dist.all_reduce(totals)
        if float(totals[2]) > 0:
            raise StopRequested()
        global_sum, global_n = totals[0], int(totals[1])
        self.count = global_n
        # DataParallel divides the summed gradients by world: scale so the result is d(global mean).
        scaled = local_sum * (self.world / global_n)
        return scaled + (global_sum / global_n - scaled).detach()


def batch_samples(model: paddle.Model, logs: dict) -> int:
    """How many samples hapi's logs['loss'] is the mean of.

    Args:
        model: the paddle.Model that produced the logs.
        logs: hapi batch logs.
    Returns:
        The sample count (hapi's logs['batch_size'] is local size x world under the launcher).
    """
    loss = compat.loss_of(model)
    return loss.count if isinstance(loss, GlobalMeanLoss) else int(logs["batch_size"])


def weights_fingerprint(state: dict) -> str:
    """SHA-256 over a state_dict's names, shapes and bytes, to compare weights across processes.

    Args:
        state: name -> tensor or array (a network's state_dict, or a checkpoint's "model").
    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        array = np.ascontiguousarray(value.numpy() if hasattr(value, "numpy") else value)
        digest.update(f"{name}{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def running_statistics(net: paddle.nn.Layer) -> list:
    """State that changes in training without the optimizer: BatchNorm's running mean/variance
    (paddle keeps them as non-trainable parameters, not buffers) and float buffers.

    Frozen weights (model.freeze) are non-trainable too but identical on every rank: left out, so
    averaging never rounds them.

    Args:
        net: the network.
    Returns:
        The tensors, in a fixed order (the same on every rank).
    """
    tensors = [getattr(layer, name) for layer in net.sublayers(include_self=True)
               for name in ("_mean", "_variance") if isinstance(getattr(layer, name, None), paddle.Tensor)]
    tensors += list(net.buffers())
    return [t for t in tensors if paddle.is_floating_point(t)]


class DistributedSync(paddle.callbacks.Callback):
    """Per-epoch agreement between ranks: global train accuracy, averaged BatchNorm statistics,
    a weights fingerprint check, and a barrier before anyone reads rank 0's final checkpoint.

    Must come before RunRecorder in the callback list, so the recorder sees the global accuracy.
    """

    def __init__(self, log=print):
        super().__init__()
        self.log, self.world = log, world_size()
        self.seen = 0

    def on_train_begin(self, logs=None):
        _STOP["requested"] = False
        try:
            # Restored by engine.sigterm_as_interrupt when train() returns or raises.
            signal.signal(signal.SIGTERM, _request_stop)
        except ValueError:  # not the main thread: leave signals alone
            pass

    def on_epoch_begin(self, epoch, logs=None):
        self.seen = 0

    def on_train_batch_end(self, step, logs=None):
        self.seen += int(logs["batch_size"]) // self.world  # hapi reports local size x world

    def on_epoch_end(self, epoch, logs=None):
        counts = paddle.to_tensor([round(float(logs["acc"]) * self.seen), self.seen], "float64")
        dist.all_reduce(counts)
        logs["acc"] = float(counts[0]) / float(counts[1])
        for tensor in running_statistics(self.model.network):
            dist.all_reduce(tensor)
            tensor.set_value(tensor / self.world)
        self._check_identical()

    def _check_identical(self) -> None:
        mine = weights_fingerprint(self.model.network.state_dict())
        everyone: list = []
        dist.all_gather_object(everyone, mine)
        if len(set(everyone)) != 1:
            raise TrainingFailed(f"data-parallel ranks hold different weights at the end of an epoch "
                                 f"(fingerprints {', '.join(f[:12] for f in everyone)}); gradients were not "
                                 f"all-reduced. Report this with the launcher's logs.")
        self.log(f"rank {rank()}/{self.world}: weights fingerprint {mine[:16]} (same on all ranks)")

    def on_train_end(self, logs=None):
        flag = paddle.to_tensor([float(_STOP["requested"])], "float32")
        dist.all_reduce(flag)  # a stop asked for after the last training step
        if float(flag[0]) > 0:
            raise StopRequested()
        barrier()  # rank 0 may still be writing the last checkpoint that finish() reads
