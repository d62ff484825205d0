"""VGG-11 (nndl 5.4 / d2l 7.2) for 32x32 inputs, with optional batch norm."""

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

# (convs in the block, output channels at width=1.0): VGG-11's configuration "A".
VGG11_BLOCKS = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))


def vgg_block(num_convs: int, in_channels: int, out_channels: int, activation: str,
              batch_norm: bool) -> nn.Sequential:
    """num_convs 3x3 convs (each optionally batch-normed) then a 2x2 max-pool.

    Args:
        num_convs: convolutions in the block.
        in_channels: channels entering the block.
        out_channels: channels of every conv in the block.
        activation: make_activation name.
        batch_norm: put BatchNorm2D between each conv and its activation.
    Returns:
        The block; it halves H and W (rounding up, so 28x28 inputs still reach 1x1).
    """
    layers = []
    for i in range(num_convs):
        # A conv bias right before batch norm is cancelled by its mean subtraction: drop it.
        layers.append(nn.Conv2D(in_channels if i == 0 else out_channels, out_channels, 3,
                                padding=1, bias_attr=False if batch_norm else None))
        if batch_norm:
            layers.append(nn.BatchNorm2D(out_channels))
        layers.append(make_activation(activation))
    layers.append(nn.MaxPool2D(2, 2, ceil_mode=True))
    return nn.Sequential(*layers)


class VGG(FeaturesHead):
    """VGG with a dense head of two hidden layers with dropout, sized for a 1x1 final feature map.

    Five pools take 32x32 to 1x1 (28x28 too, as pools round up; any input 17x17 to 32x32 works,
    others raise ConfigError). The head has 512 hidden units instead of the 224x224 original's
    4096, since it sees 512 features rather than 25088.
    """

    feature_side, model_name, input_sizes = 1, "vgg11", "17x17 to 32x32"

    def __init__(self, blocks=VGG11_BLOCKS, num_classes: int = 10, in_channels: int = 3,
                 width: float = 1.0, activation: str = "relu", dropout: float = 0.5,
                 batch_norm: bool = False):
        super().__init__()
        stages, channels = [], in_channels
        for num_convs, out in blocks:
            out = scale_channels(out, width)
            stages.append(vgg_block(num_convs, channels, out, activation, batch_norm))
            channels = out
        self.features = nn.Sequential(*stages)
        self.head = dense_head(channels, scale_channels(512, width), num_classes, activation, dropout)


@register_model
def vgg11(num_classes: int = 10, in_channels: int = 3, width: Width = 1.0,
          activation: str = "relu", dropout: DropoutRate = 0.5, batch_norm: bool = False) -> VGG:
    """VGG-11 for 32x32 inputs (also 28x28); width=1.0 is the reference size (~0.15 GMACs).

    Args:
        num_classes: output logits.
        in_channels: 1 for MNIST, 3 for CIFAR-10.
        width: multiplies every conv channel and hidden-unit count (rounded, at least 1).
        activation: name accepted by models._layers.make_activation.
        dropout: rate of the two dropout layers in the dense head.
        batch_norm: add BatchNorm2D after every conv (the conv then has no bias).
    Returns:
        The VGG layer.
    """
    return VGG(VGG11_BLOCKS, num_classes, in_channels, width, activation, dropout, batch_norm)
