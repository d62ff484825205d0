"""Network in Network (nndl 5.4 / d2l 7.3) for 32x32 inputs: no dense layer at all."""

from __future__ import annotations

import paddle
from paddle import nn

from ..registry import register_model
from ._layers import DropoutRate, Width, check_dropout, make_activation, scale_channels


def nin_block(in_channels: int, out_channels: int, kernel_size: int, padding: int,
              activation: str, last_activation: bool = True) -> nn.Sequential:
    """A kxk conv followed by two 1x1 convs (the per-pixel "micro network"), all activated.

    Args:
        in_channels: channels entering the block.
        out_channels: channels of all three convs.
        kernel_size: side of the first conv's kernel (stride 1).
        padding: padding of the first conv.
        activation: make_activation name.
        last_activation: activate the final 1x1 conv; False for the block that outputs logits.
    Returns:
        The block.
    """
    layers = [
        nn.Conv2D(in_channels, out_channels, kernel_size, padding=padding),
        make_activation(activation),
        nn.Conv2D(out_channels, out_channels, 1),
        make_activation(activation),
        nn.Conv2D(out_channels, out_channels, 1),
    ]
    if last_activation:
        layers.append(make_activation(activation))
    return nn.Sequential(*layers)


class NiN(nn.Layer):
    """Four NiN blocks (96, 256, 384, num_classes channels), 3x3/2 max-pools, global average pool.

    The 224x224 original's 11x11/4 first conv is 5x5/1 here; the other kernels and the widths are
    classic. Pools map 32 -> 15 -> 7 -> 3 (28 -> 13 -> 6 -> 2); global average pooling makes the
    output independent of the input size, so 28x28 works as well. Unlike d2l, the logits conv is
    not followed by the activation: a ReLU there would clamp logits at 0 and a class channel that
    starts all-negative would never get a gradient.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 activation: str = "relu", dropout: float = 0.5):
        super().__init__()
        c1, c2, c3 = (scale_channels(c, width) for c in (96, 256, 384))
        self.features = nn.Sequential(
            nin_block(in_channels, c1, 5, 2, activation), nn.MaxPool2D(3, 2),
            nin_block(c1, c2, 5, 2, activation), nn.MaxPool2D(3, 2),
            nin_block(c2, c3, 3, 1, activation), nn.MaxPool2D(3, 2),
            nn.Dropout(check_dropout(dropout)),
            # num_classes is not scaled by width: this block's channels are the class scores.
            nin_block(c3, num_classes, 3, 1, activation, last_activation=False),
            nn.AdaptiveAvgPool2D(1),
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Classify a batch.

        Args:
            x: images [N, in_channels, H, W], H and W at least 15 (e.g. 28 or 32).
        Returns:
            Logits [N, num_classes].
        """
        return paddle.flatten(self.features(x), 1)


@register_model
def nin(num_classes: int = 10, in_channels: int = 3, width: Width = 1.0,
        activation: str = "relu", dropout: DropoutRate = 0.5) -> NiN:
    """NiN for 32x32 inputs (also 28x28); width=1.0 is the reference size (~0.25 GMACs).

    Args:
        num_classes: output logits (channels of the last NiN block).
        in_channels: 1 for MNIST, 3 for CIFAR-10.
        width: multiplies the channels of the first three NiN blocks (rounded, at least 1).
        activation: name accepted by models._layers.make_activation.
        dropout: rate of the dropout before the last NiN block.
    Returns:
        The NiN layer.
    """
    return NiN(num_classes, in_channels, width, activation, dropout)
