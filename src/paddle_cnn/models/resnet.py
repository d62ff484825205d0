"""ResNet18 (nndl 5.4) with or without residual connections, with an ImageNet or a CIFAR stem.

State-dict keys are shared between the residual and the plain variant (stem.*, layerN.i.conv1/bn1/
conv2/bn2, fc.*); only the residual variant has layerN.0.downsample.* (1x1 conv + BN projection), so
weights can be copied by name from one variant to the other. The blocks, `downsample.0/1` and `fc`
use paddle.vision.models.resnet18's names; its stem `conv1`/`bn1` maps to `stem.conv`/`stem.bn`
(see PADDLE_VISION_NAME_MAP).
"""

from __future__ import annotations

import paddle
import paddle.nn as nn

from ..errors import ConfigError
from ..registry import register_model
from ._layers import make_activation

STEMS = ("imagenet", "cifar")

# paddle.vision.models.resnet18 key prefix -> key prefix here; every other key is identical.
PADDLE_VISION_NAME_MAP = {"conv1.": "stem.conv.", "bn1.": "stem.bn."}

STAGE_CHANNELS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Layer):
    """conv3x3-BN-act-conv3x3-BN, plus the shortcut when use_residual, then the activation.

    Args:
        in_channels: channels of the block input.
        out_channels: channels of the block output.
        stride: stride of the first conv (2 halves the resolution).
        use_residual: add the shortcut (identity, or 1x1 conv + BN projection when the shape
            changes); False builds no shortcut layers at all.
        activation: activation name for make_activation.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 use_residual: bool = True, activation: str = "relu"):
        super().__init__()
        self.use_residual = use_residual
        self.conv1 = nn.Conv2D(in_channels, out_channels, 3, stride=stride, padding=1,
                               bias_attr=False)
        self.bn1 = nn.BatchNorm2D(out_channels)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2D(out_channels, out_channels, 3, padding=1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(out_channels)
        self.act2 = make_activation(activation)
        # Only a projection when the identity cannot be added (shape change); the plain variant
        # builds none, so its parameter count and weight decay cover only layers it uses.
        self.downsample = None
        if use_residual and (stride != 1 or in_channels != out_channels):
            self.downsample = nn.Sequential(
                nn.Conv2D(in_channels, out_channels, 1, stride=stride, bias_attr=False),
                nn.BatchNorm2D(out_channels),
            )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Apply the block.

        Args:
            x: input of shape [N, in_channels, H, W].
        Returns:
            Output of shape [N, out_channels, H/stride, W/stride].
        """
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.use_residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act2(out)


def make_stem(stem: str, in_channels: int, activation: str) -> nn.Sequential:
    """Build the input stem.

    Args:
        stem: "imagenet" (7x7/2 conv, BN, act, 3x3/2 max-pool: 1/4 resolution) or "cifar"
            (3x3/1 conv, BN, act: full resolution, for 28-32 pixel images).
        in_channels: image channels (1 or 3).
        activation: activation name for make_activation.
    Returns:
        nn.Sequential with sublayers conv, bn, act (and pool). Raises ConfigError for an unknown stem.
    """
    if stem == "imagenet":
        return nn.Sequential(
            ("conv", nn.Conv2D(in_channels, 64, 7, stride=2, padding=3, bias_attr=False)),
            ("bn", nn.BatchNorm2D(64)),
            ("act", make_activation(activation)),
            ("pool", nn.MaxPool2D(3, stride=2, padding=1)),
        )
    if stem == "cifar":
        return nn.Sequential(
            ("conv", nn.Conv2D(in_channels, 64, 3, stride=1, padding=1, bias_attr=False)),
            ("bn", nn.BatchNorm2D(64)),
            ("act", make_activation(activation)),
        )
    raise ConfigError(
        f"model.stem: unknown stem {stem!r}; valid stems are: {', '.join(STEMS)} "
        "(imagenet: 7x7 stride-2 conv + max-pool; cifar: 3x3 stride-1 conv, no pool)."
    )


class ResNet18(nn.Layer):
    """ResNet18: stem, four stages of two BasicBlocks (64/128/256/512 channels), global avg-pool, fc.

    Args:
        num_classes: outputs of the final fc.
        in_channels: image channels (1 or 3).
        use_residual: True for ResNet18; False for the same network without shortcuts ("plain").
        stem: "imagenet" or "cifar", see make_stem.
        activation: activation name used in place of every ReLU.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, use_residual: bool = True,
                 stem: str = "imagenet", activation: str = "relu"):
        super().__init__()
        self.stem = make_stem(stem, in_channels, activation)
        channels = STAGE_CHANNELS[0]
        for index, out_channels in enumerate(STAGE_CHANNELS, start=1):
            first_stride = 1 if index == 1 else 2
            blocks = [
                BasicBlock(channels if i == 0 else out_channels, out_channels,
                           first_stride if i == 0 else 1, use_residual, activation)
                for i in range(BLOCKS_PER_STAGE)
            ]
            # layer1..layer4, as in paddle.vision, so block keys match it.
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            channels = out_channels
        self.avgpool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Classify a batch.

        Args:
            x: images of shape [N, in_channels, H, W].
        Returns:
            Logits of shape [N, num_classes].
        """
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(paddle.flatten(self.avgpool(x), 1))


@register_model
def resnet18(num_classes: int = 10, in_channels: int = 3, use_residual: bool = True,
             stem: str = "imagenet", activation: str = "relu") -> ResNet18:
    """ResNet18 (nndl 5.4); use_residual=False drops every shortcut."""
    return ResNet18(num_classes, in_channels, use_residual, stem, activation)


@register_model
def resnet18_plain(num_classes: int = 10, in_channels: int = 3, stem: str = "imagenet",
                   activation: str = "relu") -> ResNet18:
    """ResNet18 without residual connections (no shortcut layers are built)."""
    return ResNet18(num_classes, in_channels, False, stem, activation)
