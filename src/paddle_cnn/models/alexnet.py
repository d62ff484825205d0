"""AlexNet scaled to 32x32 inputs."""

from __future__ import annotations

from paddle import nn

from ..registry import register_model
from ._layers import (
    DropoutRate,
    FeaturesHead,
    Width,
    dense_head,
    make_activation,
    scale_channels,
)


class AlexNet(FeaturesHead):
    """AlexNet (nndl 5.4 / d2l 7.1) for 32x32: 5 convs, 3 overlapping max-pools, dropout dense head.

    The 11x11/4 first conv of the 224x224 original would leave nothing of a 32x32 image, so the
    first conv is 3x3/1; the other kernels and all conv widths (96, 256, 384, 384, 256) are classic.
    The padded 3x3/2 pools map 32 -> 16 -> 8 -> 4 (and 28 -> 14 -> 7 -> 4), so any input from
    25x25 to 32x32 works; others raise ConfigError. The dense head has 1024 hidden units instead
    of 4096: its input is 4096 features rather than 9216, and 4096 would add ~29M parameters.
    """

    feature_side, model_name, input_sizes = 4, "alexnet", "25x25 to 32x32"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 activation: str = "relu", dropout: float = 0.5):
        super().__init__()
        c1, c2, c3, c4, c5, hidden = (scale_channels(c, width) for c in (96, 256, 384, 384, 256, 1024))
        act = lambda: make_activation(activation)  # noqa: E731 - a fresh layer per use
        pool = lambda: nn.MaxPool2D(3, 2, padding=1)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2D(in_channels, c1, 3, padding=1), act(), pool(),
            nn.Conv2D(c1, c2, 5, padding=2), act(), pool(),
            nn.Conv2D(c2, c3, 3, padding=1), act(),
            nn.Conv2D(c3, c4, 3, padding=1), act(),
            nn.Conv2D(c4, c5, 3, padding=1), act(), pool(),
        )
        self.head = dense_head(c5 * 4 * 4, hidden, num_classes, activation, dropout)


@register_model
def alexnet(num_classes: int = 10, in_channels: int = 3, width: Width = 1.0,
            activation: str = "relu", dropout: DropoutRate = 0.5) -> AlexNet:
    """AlexNet for 32x32 inputs (also 28x28); width=1.0 is the reference size (~0.36 GMACs).

    Args:
        num_classes: output logits.
        in_channels: 1 for MNIST, 3 for CIFAR-10.
        width: multiplies every conv channel and hidden-unit count (rounded, at least 1).
        activation: name accepted by models._layers.make_activation.
        dropout: rate of the two dropout layers in the dense head.
    Returns:
        The AlexNet layer.
    """
    return AlexNet(num_classes, in_channels, width, activation, dropout)
