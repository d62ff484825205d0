"""The CIFAR ResNets of He et al. 2016 (section 4.2): depth 6n+2, plain or residual.

A 3x3 conv to 16 channels, three stages of n basic blocks at 16, 32 and 64 channels (the second and
third start with stride 2), global average pooling and one linear layer: 20, 32, 44, 56 and 110
layers for n = 3, 5, 7, 9, 18. Convolutions get He initialisation, as in the paper.

Shortcuts where the shape changes (the first block of stages 2 and 3):
- option A: identity on every second pixel, the extra channels padded with zeros (no parameters),
  what the paper's CIFAR results use;
- option B: a 1x1 stride-2 convolution + BN projection.
use_residual=False builds no shortcut at all: the paper's "plain" networks.
"""

from __future__ import annotations

import paddle
import paddle.nn as nn

from ..errors import ConfigError
from ..registry import register_model
from ._layers import make_activation

STAGE_CHANNELS = (16, 32, 64)
SHORTCUT_TYPES = ("A", "B")


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2D:
    he = paddle.ParamAttr(initializer=nn.initializer.KaimingNormal())
    return nn.Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, weight_attr=he, bias_attr=False)


class ZeroPadShortcut(nn.Layer):
    """Option A: x[:, :, ::stride, ::stride] with out - in zero channels appended."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.extra, self.stride = out_channels - in_channels, stride

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return paddle.concat([x, paddle.zeros_like(x[:, :1]).expand([-1, self.extra, -1, -1])], axis=1)


class CifarBlock(nn.Layer):
    """conv3x3-BN-act-conv3x3-BN, plus the shortcut when use_residual, then the activation.

    Args:
        in_channels, out_channels: block input and output channels.
        stride: stride of the first conv.
        use_residual: add a shortcut; False builds none.
        shortcut_type: "A" or "B" for a shape-changing shortcut (see the module docstring).
        activation: name for make_activation.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_residual: bool,
                 shortcut_type: str, activation: str):
        super().__init__()
        self.use_residual = use_residual
        self.conv1, self.bn1 = _conv3x3(in_channels, out_channels, stride), nn.BatchNorm2D(out_channels)
        self.act1 = make_activation(activation)
        self.conv2, self.bn2 = _conv3x3(out_channels, out_channels), nn.BatchNorm2D(out_channels)
        self.act2 = make_activation(activation)
        self.shortcut = None
        if use_residual and (stride != 1 or in_channels != out_channels):
            self.shortcut = (ZeroPadShortcut(in_channels, out_channels, stride) if shortcut_type == "A" else
                             nn.Sequential(nn.Conv2D(in_channels, out_channels, 1, stride=stride, bias_attr=False),
                                           nn.BatchNorm2D(out_channels)))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        if self.use_residual:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return self.act2(out)


class CifarResNet(nn.Layer):
    """ResNet-(6n+2) for 32x32 inputs.

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110).
        num_classes: outputs.
        in_channels: input channels.
        use_residual: False gives the plain network.
        shortcut_type: "A" (zero-padded identity) or "B" (projection).
        activation: activation name.
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, use_residual: bool = True,
                 shortcut_type: str = "A", activation: str = "relu"):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}.")
        if shortcut_type not in SHORTCUT_TYPES:
            raise ConfigError(f"model.shortcut_type: {shortcut_type!r} is not one of {', '.join(SHORTCUT_TYPES)} "
                              f"(A: zero-padded identity, B: 1x1 projection).")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(_conv3x3(in_channels, STAGE_CHANNELS[0]), nn.BatchNorm2D(STAGE_CHANNELS[0]),
                                  make_activation(activation))
        channels = STAGE_CHANNELS[0]
        for index, out_channels in enumerate(STAGE_CHANNELS, start=1):
            blocks = [CifarBlock(channels if i == 0 else out_channels, out_channels,
                                 2 if (i == 0 and index > 1) else 1, use_residual, shortcut_type, activation)
                      for i in range(n)]
            setattr(self, f"stage{index}", nn.Sequential(*blocks))
            channels = out_channels
        self.avgpool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Classify a batch.

        Args:
            x: images [N, in_channels, H, W].
        Returns:
            Logits [N, num_classes].
        """
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(paddle.flatten(self.avgpool(x), 1))


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 3, use_residual: bool = True, shortcut_type: str = "A",
             activation: str = "relu") -> CifarResNet:
    """ResNet-20 of He et al. (n=3); use_residual=False: plain-20."""
    return CifarResNet(20, num_classes, in_channels, use_residual, shortcut_type, activation)


@register_model
def resnet32(num_classes: int = 10, in_channels: int = 3, use_residual: bool = True, shortcut_type: str = "A",
             activation: str = "relu") -> CifarResNet:
    """ResNet-32 of He et al. (n=5); use_residual=False: plain-32."""
    return CifarResNet(32, num_classes, in_channels, use_residual, shortcut_type, activation)


@register_model
def resnet44(num_classes: int = 10, in_channels: int = 3, use_residual: bool = True, shortcut_type: str = "A",
             activation: str = "relu") -> CifarResNet:
    """ResNet-44 of He et al. (n=7); use_residual=False: plain-44."""
    return CifarResNet(44, num_classes, in_channels, use_residual, shortcut_type, activation)


@register_model
def resnet56(num_classes: int = 10, in_channels: int = 3, use_residual: bool = True, shortcut_type: str = "A",
             activation: str = "relu") -> CifarResNet:
    """ResNet-56 of He et al. (n=9); use_residual=False: plain-56."""
    return CifarResNet(56, num_classes, in_channels, use_residual, shortcut_type, activation)


@register_model
def resnet110(num_classes: int = 10, in_channels: int = 3, use_residual: bool = True, shortcut_type: str = "A",
              activation: str = "relu") -> CifarResNet:
    """ResNet-110 of He et al. (n=18); use_residual=False: plain-110."""
    return CifarResNet(110, num_classes, in_channels, use_residual, shortcut_type, activation)
