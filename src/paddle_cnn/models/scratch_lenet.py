"""LeNet-5 built from the from-scratch operators in paddle_cnn.scratch_ops (nndl 5.1-5.2 exercise).

Same layer names, parameter names and shapes as models/lenet.py's `lenet5`, so a state_dict trained
with one loads into the other and both give the same outputs: a check that the scratch operators are
right, and a way to compare their speed inside a whole network.
"""

from __future__ import annotations

from ..registry import register_model
from ..scratch_ops import AvgPool2DScratch, Conv2DScratch, MaxPool2DScratch
from .lenet import LeNet5


class LeNet5Scratch(LeNet5):
    """LeNet-5 for 1x32x32 inputs: scratch conv5-6, max-pool, conv5-16, avg-pool, conv5-120, fc84, fc."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: str = "relu"):
        super().__init__(num_classes, in_channels, first_padding=0, activation=activation)
        # Swap the framework's conv and pooling for the scratch ones; names, shapes, activations,
        # fully connected layers (plain matmuls already) and forward() stay LeNet5's.
        # input_size makes a wrong layer stack fail when built, not on the first batch.
        self.conv1 = Conv2DScratch(in_channels, 6, 5, input_size=32)
        self.pool2 = MaxPool2DScratch(2, 2, input_size=28)
        self.conv3 = Conv2DScratch(6, 16, 5, input_size=14)
        self.pool4 = AvgPool2DScratch(2, 2, input_size=10)
        self.conv5 = Conv2DScratch(16, 120, 5, input_size=5)


@register_model(fast_conv=False)  # its convs are Conv2DScratch: nothing for fast_conv to swap
def lenet5_scratch(num_classes: int = 10, in_channels: int = 1, activation: str = "relu") -> LeNet5Scratch:
    """The book's LeNet-5 for 1x32x32 inputs, with conv and pooling written from scratch.

    Args:
        num_classes: output classes. in_channels: input channels. activation: see _layers.ACTIVATIONS.
    Returns:
        A LeNet5Scratch whose state_dict is interchangeable with lenet5's.
    """
    return LeNet5Scratch(num_classes, in_channels, activation=activation)
