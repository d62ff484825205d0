"""Paddle's private API that paddle-cnn relies on: every use in one place, each with its reason.

Checked against paddlepaddle 3.3.1 (the version pyproject.toml pins). Paddle gives no public way
to do these things; when the pin moves, tests/test_compat.py exercises every function here
against the installed Paddle, so a rename fails there first, with the function's name.
"""

from __future__ import annotations

from typing import NamedTuple

import paddle

# Imported here, not in the functions: SOT traces fast_conv's forward, and cannot trace an import.
from paddle.base.dygraph.base import in_sot_simulation_mode

# count_adap_avgpool, count_avgpool, count_bn, count_zero_ops: for fast_conv's layer types.
from paddle.hapi.dynamic_flops import (  # noqa: F401
    count_adap_avgpool,
    count_avgpool,
    count_bn,
    count_convNd,
    count_zero_ops,
)


def optimizer_of(model: paddle.Model):
    """The optimizer given to paddle.Model.prepare (hapi keeps it as `_optimizer`, with no getter).

    Needed for the current learning rate and for the optimizer state in checkpoints.

    Args:
        model: a prepared paddle.Model.
    Returns:
        The paddle.optimizer.Optimizer.
    """
    return model._optimizer


def lr_scheduler_of(optimizer):
    """The optimizer's learning rate as given (`_learning_rate`: a float or an LRScheduler; no getter).

    Needed to step the plateau schedule with the dev metric at the end of an epoch.

    Args:
        optimizer: a paddle.optimizer.Optimizer.
    Returns:
        The float or paddle.optimizer.lr.LRScheduler it was built with.
    """
    return optimizer._learning_rate


def loss_of(model: paddle.Model):
    """The loss given to paddle.Model.prepare (hapi's `_loss`), or None before prepare.

    Args:
        model: a paddle.Model.
    Returns:
        The loss layer.
    """
    return getattr(model, "_loss", None)


class ConvGeometry(NamedTuple):
    """A Conv2D's hyperparameters as it resolved them (Conv2D keeps them only as private fields)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, ...]  # `_updated_padding`: explicit per-side padding after resolving the argument
    dilation: tuple[int, int]
    groups: int
    data_format: str
    padding_mode: str
    padding_algorithm: str


def conv_geometry(layer: paddle.nn.Conv2D) -> ConvGeometry:
    """Read a Conv2D's resolved geometry (needed to reproduce its computation in fast_conv).

    Args:
        layer: a paddle.nn.Conv2D.
    Returns:
        Its ConvGeometry.
    """
    return ConvGeometry(tuple(layer._kernel_size), tuple(layer._stride), tuple(layer._updated_padding),
                        tuple(layer._dilation), layer._groups, layer._data_format, layer._padding_mode,
                        layer._padding_algorithm)


def in_sot_tracing() -> bool:
    """Whether the SOT tracer of paddle.jit.to_static is simulating this forward right now.

    fast_conv must then run paddle's own conv: its eager-only tricks would be traced into the graph.

    Returns:
        True inside SOT simulation.
    """
    return in_sot_simulation_mode()


def conv_flops_counter():
    """paddle.flops' own counter for convolutions.

    paddle.flops picks its hooks by exact layer type, so a Conv2D subclass (FastConv2D) must be
    given this counter explicitly to be counted at all.

    Returns:
        The counter function, for paddle.flops(custom_ops={cls: counter}).
    """
    return count_convNd


def cifar10_url_prefix() -> str:
    """The host paddle.vision.datasets.Cifar10 downloads from (a module global, URL_PREFIX).

    The offline check probes this host, so that `data.download: true` fails fast without a network.

    Returns:
        The URL prefix.
    """
    from paddle.vision.datasets import cifar

    return getattr(cifar, "URL_PREFIX", "https://dataset.bj.bcebos.com/")
