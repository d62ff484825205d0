"""LeNet-5: the nndl book's 32x32 version and the classic 28x28 one (padding on the first conv)."""

from __future__ import annotations

import paddle
from paddle import nn

from ..registry import register_model
from ._layers import make_activation


class LeNet5(nn.Layer):
    """LeNet-5 as in nndl 5.3: conv5-6, max-pool, conv5-16, avg-pool, conv5-120, fc84, fc(classes).

    With `first_padding=2` a 28x28 input gives the same 28x28 feature map the 32x32 book input does,
    so both variants have identical parameters (61,706 for 10 classes).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, first_padding: int = 0,
                 activation: str = "relu"):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, 6, 5, padding=first_padding)
        self.act1 = make_activation(activation)
        self.pool2 = nn.MaxPool2D(2, 2)
        self.conv3 = nn.Conv2D(6, 16, 5)
        self.act3 = make_activation(activation)
        self.pool4 = nn.AvgPool2D(2, 2)
        self.conv5 = nn.Conv2D(16, 120, 5)
        self.act5 = make_activation(activation)
        self.fc6 = nn.Linear(120, 84)
        self.act6 = make_activation(activation)
        self.fc7 = nn.Linear(84, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.pool2(self.act1(self.conv1(x)))
        x = self.pool4(self.act3(self.conv3(x)))
        x = self.act5(self.conv5(x))
        x = paddle.flatten(x, 1)
        return self.fc7(self.act6(self.fc6(x)))


@register_model
def lenet5(num_classes: int = 10, in_channels: int = 1, activation: str = "relu") -> LeNet5:
    """The book's LeNet-5 for 1x32x32 inputs (MNIST resized to 32)."""
    return LeNet5(num_classes, in_channels, first_padding=0, activation=activation)


@register_model(input_size=28)  # the first conv pads by 2 for MNIST's own 28x28
def lenet(num_classes: int = 10, in_channels: int = 1, activation: str = "relu") -> LeNet5:
    """Classic LeNet-5 for 28x28 inputs: the first conv pads by 2."""
    return LeNet5(num_classes, in_channels, first_padding=2, activation=activation)
