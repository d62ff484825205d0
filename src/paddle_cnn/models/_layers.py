"""Small building blocks shared by several architectures."""

from __future__ import annotations

import paddle.nn as nn

from ..errors import ConfigError

# A table, not getattr on paddle.nn: only these names are accepted from a config.
ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Layer:
    """Build an activation layer by config name.

    Args:
        name: one of ACTIVATIONS.
    Returns:
        A new activation layer. Raises ConfigError for an unknown name.
    """
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"model.activation: unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]()
