"""Convolution and pooling written from elementary tensor ops (nndl 5.1-5.2), checked against paddle.nn.

Every operator loops over the k x k kernel offsets, not over output pixels: for offset (i, j) the
input pixels that meet kernel tap (i, j) are one strided slice of the (padded) input, so a layer costs
k*k slices plus k*k matmuls (or maxima / sums) whatever the image size. Autograd differentiates
slicing, concat, transpose, matmul, maximum and add, so no backward pass is written by hand.
Stride-1 layers work on an [H, W, N, C] copy of the input, strided ones on NCHW (see _Layout).

Size rule: an output side is (N + 2P - F) / S + 1. paddle.nn floors a fractional value (silently
dropping the last rows/columns); these operators raise a ValueError instead, as the course asks.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import paddle
import paddle.nn as nn
from paddle.nn.initializer import Normal


def output_size(n: int, f: int, p: int, s: int, dim: str = "side") -> int:
    """Output side length of a convolution or pooling window sliding over one input side.

    Args:
        n: input side length N. f: window (kernel) size F. p: zero padding P on each end. s: stride S.
        dim: name of the side ("height", "width") used in the error message.
    Returns:
        (N + 2P - F) / S + 1. Raises ValueError naming `dim` and the numbers when that is not a
        positive integer.
    """
    span = n + 2 * p - f
    if span < 0 or span % s != 0:
        value = span / s + 1
        problem = ("is not positive: the window is larger than the padded input" if span < 0
                   else "is not an integer")
        raise ValueError(
            f"{dim}: output size (N + 2P - F) / S + 1 = ({n} + 2*{p} - {f}) / {s} + 1 = {value:g} "
            f"{problem}; choose a padding P or stride S so that N + 2P - F is a non-negative "
            f"multiple of S (N={n}, F={f}, P={p}, S={s})."
        )
    return span // s + 1


def conv2d_params(in_ch: int, out_ch: int, k: int, bias: bool = True) -> int:
    """Number of learnable parameters of a k x k convolution.

    Args:
        in_ch: input channels D. out_ch: output channels P. k: kernel side U = V.
        bias: whether the layer has one bias per output channel.
    Returns:
        P x D x U x V (+ P with bias).
    """
    return out_ch * in_ch * k * k + (out_ch if bias else 0)


def conv2d_macs(in_ch: int, out_ch: int, k: int, out_h: int, out_w: int, bias: bool = False) -> int:
    """Multiply-accumulates of one k x k convolution over one image.

    Args:
        in_ch: input channels D. out_ch: output channels P. k: kernel side.
        out_h: output height M'. out_w: output width N'.
        bias: add one operation per output value for the bias, as paddle.flops does.
    Returns:
        P x D x k x k x M' x N' (+ P x M' x N' with bias).
    """
    per_output = in_ch * k * k + (1 if bias else 0)
    return out_ch * out_h * out_w * per_output


def _check_positive(**values: int) -> None:
    # Zero/negative kernel or stride would make the slicing below silently produce garbage.
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def as_pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Read a size (an image, a pooling window) given as one side or as (height, width).

    Args:
        size: int or a pair.
    Returns:
        (height, width).
    """
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


class _Layout:
    """Where the spatial axes sit while an operator works: [N, C, H, W] or [H, W, N, C].

    Why two: eager Paddle runs elementwise ops and copies on strided views at very different speeds
    depending on the view. Measured on CPU (16x64x32x32): stride-1 offset slices are ~6x faster
    spatial-first (each pixel keeps N*C contiguous values), stride-2 slices ~10x faster in NCHW.
    So stride-1 layers pay two transposes to work spatial-first; strided layers stay in NCHW.
    """

    def __init__(self, spatial_first: bool):
        self.spatial_first = spatial_first
        self.axes = (0, 1) if spatial_first else (2, 3)

    def to_work(self, x: paddle.Tensor) -> paddle.Tensor:
        """Bring an [N, C, H, W] tensor into the working layout (a contiguous copy if it moves)."""
        if not self.spatial_first:
            return x
        n, c, h, w = x.shape
        # One 2-D transpose [N*C, H*W] -> [H*W, N*C]: Paddle's 2-D copy is ~3x faster than a 4-D one.
        return paddle.transpose(x.reshape([n * c, h * w]), [1, 0]).contiguous().reshape([h, w, n, c])

    def from_work(self, y: paddle.Tensor) -> paddle.Tensor:
        """Bring a working-layout tensor back to [N, C, H, W], contiguous."""
        if not self.spatial_first:
            return y
        h, w, n, c = y.shape
        return paddle.transpose(y.reshape([h * w, n * c]), [1, 0]).contiguous().reshape([n, c, h, w])

    def pad(self, x: paddle.Tensor, p: int, value: float) -> paddle.Tensor:
        """Pad both spatial axes by p on each side with a constant (0 for conv/avg, -inf for max).

        The padding is a constant, so gradients flow only to x.
        """
        for axis in self.axes if p else ():
            shape = list(x.shape)
            shape[axis] = p
            edge = paddle.full(shape, value, dtype=x.dtype)
            x = paddle.concat([edge, x, edge], axis=axis)
        return x

    def windows(self, x: paddle.Tensor, k: int, s: int, out_h: int, out_w: int):
        """Yield (i, j, slice) for each kernel offset: the input pixels that meet kernel tap (i, j).

        Args:
            x: padded input in the working layout. k: kernel side. s: stride. out_h, out_w: output size.
        Returns:
            Generator of (i, j, tensor whose spatial axes are out_h x out_w).
        """
        index = [slice(None)] * 4
        for i in range(k):
            for j in range(k):
                index[self.axes[0]] = slice(i, i + s * (out_h - 1) + 1, s)
                index[self.axes[1]] = slice(j, j + s * (out_w - 1) + 1, s)
                yield i, j, x[tuple(index)]

    def mix_channels(self, patch: paddle.Tensor, weight: paddle.Tensor) -> paddle.Tensor:
        """Apply a [P, D] channel-mixing matrix to one offset slice (one conv kernel tap).

        Args:
            patch: [out_h, out_w, N, D] or [N, D, out_h, out_w] slice. weight: [P, D].
        Returns:
            The slice with D channels replaced by P, same layout.
        """
        if self.spatial_first:
            return paddle.matmul(patch, weight, transpose_y=True)
        n, d, h, w = patch.shape
        # [P, D] @ [N, D, L] broadcasts over the batch.
        return paddle.matmul(weight, patch.reshape([n, d, h * w])).reshape([n, -1, h, w])

    def channel_vector(self, v: paddle.Tensor) -> paddle.Tensor:
        """Shape a per-channel vector (bias) to broadcast over a working-layout tensor."""
        return v if self.spatial_first else v.reshape([-1, 1, 1])


class _Windowed(nn.Layer):
    """Shared size bookkeeping of a square k x k window with stride and padding."""

    # Not named output_shape: paddle.flops registers a buffer of that name on every layer.

    def __init__(self, kernel_size: int, stride: int, padding: int,
                 input_size: int | tuple[int, int] | None):
        super().__init__()
        _check_positive(kernel_size=kernel_size, stride=stride)
        if not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"padding must be a non-negative integer, got {padding!r}.")
        self.kernel_size, self.stride, self.padding = int(kernel_size), int(stride), int(padding)
        self._layout = _Layout(spatial_first=self.stride == 1)
        if input_size is not None:
            self.output_hw(*as_pair(input_size))

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """Output (height, width) for an input of the given size.

        Args:
            height, width: input spatial size.
        Returns:
            (out_h, out_w). Raises ValueError naming the side whose size rule fails.
        """
        k, s, p = self.kernel_size, self.stride, self.padding
        name = type(self).__name__
        return (output_size(height, k, p, s, dim=f"{name} height"),
                output_size(width, k, p, s, dim=f"{name} width"))

    def _reduce_windows(self, x: paddle.Tensor, out_h: int, out_w: int,
                        combine: Callable[[paddle.Tensor, paddle.Tensor], paddle.Tensor]) -> paddle.Tensor:
        """Fold every window of a padded working-layout input with an elementwise combine.

        Args:
            x: padded input in the working layout. out_h, out_w: output size.
            combine: elementwise binary op (paddle.maximum, paddle.add).
        Returns:
            Working-layout tensor with out_h x out_w spatial axes.
        """
        out = None
        for _, _, patch in self._layout.windows(x, self.kernel_size, self.stride, out_h, out_w):
            out = patch if out is None else combine(out, patch)
        return out


class Conv2DScratch(_Windowed):
    """2-D cross-correlation (paddle.nn.Conv2D semantics), multi-channel, stride, zero padding, bias.

    Parameters have paddle.nn.Conv2D's names, shapes and default initialisation, so the state_dict of
    one loads into the other.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True,
                 input_size: int | tuple[int, int] | None = None):
        super().__init__(kernel_size, stride, padding, input_size)
        _check_positive(in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        # He-normal with std sqrt(2 / fan_in), the same default as paddle.nn.Conv2D.
        std = (2.0 / (in_channels * kernel_size * kernel_size)) ** 0.5
        self.weight = self.create_parameter(
            [out_channels, in_channels, kernel_size, kernel_size], default_initializer=Normal(0.0, std))
        self.bias = self.create_parameter([out_channels], is_bias=True) if bias else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Convolve a batch.

        Args:
            x: [N, in_channels, H, W].
        Returns:
            [N, out_channels, out_h, out_w].
        """
        n, channels, height, width = x.shape
        if channels != self.in_channels:
            raise ValueError(f"Conv2DScratch expects {self.in_channels} input channels, got {channels}.")
        out_h, out_w = self.output_hw(height, width)
        layout = self._layout
        x = layout.pad(layout.to_work(x), self.padding, 0.0)
        out = None
        for i, j, patch in layout.windows(x, self.kernel_size, self.stride, out_h, out_w):
            term = layout.mix_channels(patch, self.weight[:, :, i, j])
            out = term if out is None else out + term
        if self.bias is not None:
            out = out + layout.channel_vector(self.bias)
        return layout.from_work(out)


class MaxPool2DScratch(_Windowed):
    """Max pooling (paddle.nn.MaxPool2D semantics); padding counts as -inf so it never wins."""

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0,
                 input_size: int | tuple[int, int] | None = None):
        super().__init__(kernel_size, kernel_size if stride is None else stride, padding, input_size)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Pool a batch.

        Args:
            x: [N, C, H, W].
        Returns:
            [N, C, out_h, out_w]; the gradient of each output goes to its window's maximum.
        """
        out_h, out_w = self.output_hw(*x.shape[2:])
        x = self._layout.pad(self._layout.to_work(x), self.padding, float("-inf"))
        return self._layout.from_work(self._reduce_windows(x, out_h, out_w, paddle.maximum))


class AvgPool2DScratch(_Windowed):
    """Average pooling (paddle.nn.AvgPool2D semantics, including its default exclusive=True).

    With exclusive=True (paddle's default) a window overlapping the zero padding is divided by the
    number of real pixels it covers; with exclusive=False by k*k, i.e. padded zeros count.
    """

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0,
                 exclusive: bool = True, input_size: int | tuple[int, int] | None = None):
        super().__init__(kernel_size, kernel_size if stride is None else stride, padding, input_size)
        self.exclusive = exclusive

    def _divisor(self, height: int, width: int, out_h: int, out_w: int, dtype) -> paddle.Tensor | float:
        """Number of pixels each window averages over.

        Args:
            height, width: unpadded input size. out_h, out_w: output size. dtype: tensor dtype.
        Returns:
            k*k as a float, or, when exclusive, a working-layout count of non-padding pixels per
            window that broadcasts over batch and channels.
        """
        if not self.exclusive or self.padding == 0:
            return float(self.kernel_size * self.kernel_size)
        # Pooling a ones image with the same sliding windows counts real pixels per window.
        ones = self._layout.to_work(paddle.ones([1, 1, height, width], dtype=dtype))
        return self._reduce_windows(self._layout.pad(ones, self.padding, 0.0), out_h, out_w, paddle.add)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Pool a batch.

        Args:
            x: [N, C, H, W].
        Returns:
            [N, C, out_h, out_w] window means.
        """
        height, width = x.shape[2:]
        out_h, out_w = self.output_hw(height, width)
        x = self._layout.pad(self._layout.to_work(x), self.padding, 0.0)
        total = self._reduce_windows(x, out_h, out_w, paddle.add)
        return self._layout.from_work(total / self._divisor(height, width, out_h, out_w, x.dtype))


def _count_conv(layer: Conv2DScratch, inputs, output: paddle.Tensor) -> None:
    # Same convention as paddle.flops' Conv2D counter: MACs plus one op per output for the bias.
    _, out_ch, out_h, out_w = output.shape
    macs = conv2d_macs(layer.in_channels, out_ch, layer.kernel_size, out_h, out_w,
                       bias=layer.bias is not None)
    layer.total_ops += int(output.shape[0]) * macs


def _count_avg_pool(layer: AvgPool2DScratch, inputs, output: paddle.Tensor) -> None:
    # paddle.flops counts an average pool as one op per output value.
    layer.total_ops += int(np.prod(output.shape))


def _count_zero(layer: nn.Layer, inputs, output: paddle.Tensor) -> None:
    # paddle.flops counts max pooling as free; kept for a like-for-like comparison.
    layer.total_ops += 0


def flops_counters() -> dict[type, Callable]:
    """Counters that let paddle.flops count these layers the way it counts paddle.nn's.

    Args:
        None.
    Returns:
        A dict to pass as paddle.flops(net, size, custom_ops=flops_counters()).
    """
    return {Conv2DScratch: _count_conv, AvgPool2DScratch: _count_avg_pool, MaxPool2DScratch: _count_zero}
