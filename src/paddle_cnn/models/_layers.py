"""Small building blocks shared by several architectures."""

from __future__ import annotations

from typing import Annotated

import paddle
from paddle import nn

from ..errors import ConfigError

# A table, not getattr on paddle.nn: only these names are accepted from a config.
ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


# Annotations of factory options: registry.check_options enforces these ranges when a config is
# checked, before a run starts; scale_channels and check_dropout still guard direct calls.
Width = Annotated[float, {"min_exclusive": 0.0}]
DropoutRate = Annotated[float, {"min": 0.0, "max": 0.999}]


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


def scale_channels(channels: int, width: float) -> int:
    """Scale a reference channel (or hidden-unit) count by the model's width multiplier.

    Args:
        channels: count at width=1.0, the reference size.
        width: multiplier, > 0.
    Returns:
        round(channels * width), at least 1. Raises ConfigError when width is not positive.
    """
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not width > 0:
        raise ConfigError(
            f"model.width: must be a positive number (1.0 is the reference size, 0.5 halves "
            f"every channel count), got {width!r}."
        )
    return max(1, round(channels * width))


def check_dropout(dropout: float) -> float:
    """Validate a dropout rate.

    Args:
        dropout: probability of zeroing a unit.
    Returns:
        dropout unchanged. Raises ConfigError unless 0 <= dropout < 1.
    """
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ConfigError(
            f"model.dropout: must be a number in [0, 1) (0 disables dropout), got {dropout!r}."
        )
    return float(dropout)


def check_feature_size(features: paddle.Tensor, expected: int, model: str, sizes: str,
                       image: list[int]) -> None:
    """Fail clearly when an input size does not give the feature map a dense head was built for.

    Args:
        features: output of the convolutional part, [N, C, H, W].
        expected: side of the square feature map the head expects.
        model: registered model name, for the message.
        sizes: human description of the input sizes that work, e.g. "25x25 to 32x32".
        image: [H, W] of the input image.
    Returns:
        None. Raises ConfigError naming the accepted input sizes.
    """
    got = list(features.shape[2:])
    # -1 appears for unknown dims under static graphs; only concrete mismatches are errors.
    if all(d > 0 for d in got) and got != [expected, expected]:
        raise ConfigError(
            f"model {model!r}: its dense head needs a {expected}x{expected} feature map, which "
            f"inputs of {sizes} give, but a {image[0]}x{image[1]} input gives {got[0]}x{got[1]}. "
            f"Resize the images to 32x32 in the data config, or use 'nin' or 'googlenet', "
            f"which pool globally and take other sizes."
        )


def dense_head(in_features: int, hidden: int, num_classes: int, activation: str, dropout: float) -> nn.Sequential:
    """The classic two-hidden-layer classifier with dropout (AlexNet, VGG).

    Args:
        in_features: flattened feature count.
        hidden: units of each hidden layer.
        num_classes: output logits.
        activation: name accepted by make_activation.
        dropout: rate after each hidden layer.
    Returns:
        Linear-act-dropout twice, then Linear to num_classes.
    """
    rate = check_dropout(dropout)
    return nn.Sequential(
        nn.Linear(in_features, hidden), make_activation(activation), nn.Dropout(rate),
        nn.Linear(hidden, hidden), make_activation(activation), nn.Dropout(rate),
        nn.Linear(hidden, num_classes),
    )


class FeaturesHead(nn.Layer):
    """A convolutional `features` stack, then a dense `head` on a fixed-size feature map.

    Subclasses set features, head, feature_side (side of the map the head expects), model_name
    and input_sizes (the inputs that give that map, for the error message).
    """

    feature_side: int
    model_name: str
    input_sizes: str

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Classify a batch.

        Args:
            x: images [N, in_channels, H, W] of a size listed in input_sizes.
        Returns:
            Logits [N, num_classes].
        """
        f = self.features(x)
        check_feature_size(f, self.feature_side, self.model_name, self.input_sizes, list(x.shape[2:]))
        return self.head(paddle.flatten(f, 1))
