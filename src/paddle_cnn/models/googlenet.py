"""GoogLeNet (nndl 5.4 / d2l 7.4) for 32x32 inputs: small stem, nine Inception blocks, GAP, fc."""

from __future__ import annotations

import paddle
from paddle import nn

from ..registry import register_model
from ._layers import DropoutRate, Width, check_dropout, make_activation, scale_channels

# Inception blocks of the original, at width=1.0: (c1, (c2_reduce, c2), (c3_reduce, c3), c4).
# None marks the 3x3/2 max-pool between stages.
GOOGLENET_PLAN = (
    (64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64), None,
    (192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64),
    (128, (128, 256), (24, 64), 64), (112, (144, 288), (32, 64), 64),
    (256, (160, 320), (32, 128), 128), None,
    (256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128),
)


def _conv(in_channels: int, out_channels: int, kernel_size: int, activation: str) -> nn.Sequential:
    """A same-size conv and its activation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel side; padding keeps H and W.
        activation: make_activation name.
    Returns:
        conv -> activation.
    """
    return nn.Sequential(nn.Conv2D(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         make_activation(activation))


class Inception(nn.Layer):
    """Four parallel branches concatenated on channels: 1x1; 1x1->3x3; 1x1->5x5; 3x3 pool->1x1."""

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int],
                 c4: int, activation: str = "relu"):
        super().__init__()
        self.branch1 = _conv(in_channels, c1, 1, activation)
        self.branch2 = nn.Sequential(_conv(in_channels, c2[0], 1, activation),
                                     _conv(c2[0], c2[1], 3, activation))
        self.branch3 = nn.Sequential(_conv(in_channels, c3[0], 1, activation),
                                     _conv(c3[0], c3[1], 5, activation))
        self.branch4 = nn.Sequential(nn.MaxPool2D(3, 1, padding=1), _conv(in_channels, c4, 1, activation))
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Run the branches and concatenate them.

        Args:
            x: [N, in_channels, H, W].
        Returns:
            [N, out_channels, H, W].
        """
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return paddle.concat([b(x) for b in branches], axis=1)


class GoogLeNet(nn.Layer):
    """GoogLeNet v1 without auxiliary classifiers, with a stem sized for 32x32.

    The 224x224 stem (7x7/2 conv, two pools: /8) becomes 3x3 conv 64, 3x3/2 pool, 1x1 conv 64,
    3x3 conv 192 (/2), so the Inception stages run at 16x16, 8x8 and 4x4 (28x28: 14, 7, 4; any
    size works thanks to global average pooling). Block widths are the original's.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 activation: str = "relu", dropout: float = 0.4):
        super().__init__()
        s = lambda c: scale_channels(c, width)  # noqa: E731
        stem = [_conv(in_channels, s(64), 3, activation), nn.MaxPool2D(3, 2, padding=1),
                _conv(s(64), s(64), 1, activation), _conv(s(64), s(192), 3, activation)]
        layers, channels = [nn.Sequential(*stem)], s(192)
        for spec in GOOGLENET_PLAN:
            if spec is None:
                layers.append(nn.MaxPool2D(3, 2, padding=1))
                continue
            c1, (r2, c2), (r3, c3), c4 = spec
            block = Inception(channels, s(c1), (s(r2), s(c2)), (s(r3), s(c3)), s(c4), activation)
            layers.append(block)
            channels = block.out_channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2D(1))
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Classify a batch.

        Args:
            x: images [N, in_channels, H, W] (32x32 or 28x28; any size of at least 1x1).
        Returns:
            Logits [N, num_classes].
        """
        return self.fc(self.dropout(paddle.flatten(self.features(x), 1)))


@register_model
def googlenet(num_classes: int = 10, in_channels: int = 3, width: Width = 1.0,
              activation: str = "relu", dropout: DropoutRate = 0.4) -> GoogLeNet:
    """GoogLeNet for 32x32 inputs (also 28x28); width=1.0 is the reference size (~0.4 GMACs).

    Args:
        num_classes: output logits.
        in_channels: 1 for MNIST, 3 for CIFAR-10.
        width: multiplies every channel count, stem and Inception branches (rounded, at least 1).
        activation: name accepted by models._layers.make_activation.
        dropout: rate of the dropout before the fc layer (0.4 as in the original).
    Returns:
        The GoogLeNet layer.
    """
    return GoogLeNet(num_classes, in_channels, width, activation, dropout)
