"""A faster Conv2D forward for CPU training, switched on by `runtime.fast_conv` (see issue 4).

Paddle 3.3.1's CPU conv kernel loops over the batch and calls one small GEMM per image (im2col,
then [C_out, C*k*k] x [C*k*k, pixels]). When a conv's output per image is small, as in ResNet18's
later stages on 32x32 inputs (4x4, 2x2 and 1x1 pixels) or LeNet's second and third convs, those
GEMMs are nearly matrix-vector products and run at a few GFLOP/s. Unfolding the whole batch into
one [N * pixels, C*k*k] matrix turns them into one large GEMM. Separately, paddle adds a conv bias
as a [1, C, 1, 1] tensor, which takes a slow generic broadcast path (forward and backward ~3x
slower than the same add with a [C, 1, 1] bias). Max-pool layers run Paddle's indexed kernel, whose
backward scatters to the kept argmax instead of scanning each window again (FastMaxPool2D), and
batch norm on 1x1 maps takes Paddle's fast [N, C] kernel (FastBatchNorm2D), a global average
pool of a 1x1 map is passed through (FastGlobalAvgPool2D), and with the oneDNN operator average
pools run its kernel (FastAvgPool2D).

Both are exact reformulations: same parameters, same state_dict, same results to float rounding
(tests/test_fast_conv.py compares outputs and all gradients with paddle's conv). While
paddle.jit.to_static captures a graph (either tracer) and off the CPU the layer runs paddle's own
forward.
"""

from __future__ import annotations

import sys

import paddle
import paddle.nn.functional as F

from . import onednn_conv
from .compat import (
    ConvGeometry,
    conv_flops_counter,
    conv_geometry,
    count_adap_avgpool,
    count_avgpool,
    count_bn,
    count_zero_ops,
    in_sot_tracing,
)
from .runtime import DECISIONS, cpu_vendor
from .scratch_ops import as_pair

# Where the batch-GEMM path wins, measured per layer by `paddle-cnn bench --conv` (forward +
# backward, batch 128, 2 threads; the table is in the README): at every output of 16 pixels or
# fewer (ResNet18's 4x4, 2x2, 1x1 stages, at any channel count) and where one image's output is
# small (64x6x6, LeNet's 16x10x10 and 120x1x1); it loses from 64x8x8 (1.03-1.31x paddle's time
# in three runs) and 16x16x16 up: unfolding a larger image costs more than the single GEMM saves.
MAX_GEMM_PIXELS = 16
MAX_GEMM_OUTPUT = 2304  # C_out x pixels of one image
# A 1x1 stride-1 conv needs no im2col in paddle's kernel, so unfolding only adds copies: the GEMM
# path loses at 4x4 (832->48: 2.6x paddle's time, 832->256: 1.4x) and wins from 2x2 down.
MAX_POINTWISE_GEMM_PIXELS = 4


def _geometry(layer) -> ConvGeometry:
    """A Conv2D's geometry; enable() stores it once, as it is fixed after construction (per-forward hot path)."""
    return layer.__dict__.get("_fast_conv_geometry") or conv_geometry(layer)


def supported(layer) -> bool:
    """Whether fast_conv_forward computes exactly what this Conv2D computes.

    Args:
        layer: a paddle.nn.Conv2D.
    Returns:
        True for NCHW, ungrouped, undilated convs with explicit zero padding.
    """
    g = _geometry(layer)
    return (g.data_format == "NCHW" and g.groups == 1 and g.padding_mode == "zeros"
            and g.padding_algorithm == "EXPLICIT" and g.dilation == (1, 1) and len(g.padding) == 2)


def uses_gemm(c_out: int, out_h: int, out_w: int, pointwise: bool = False) -> bool:
    """Whether a conv with this output per image takes the batch-GEMM path.

    Args:
        c_out: output channels. out_h, out_w: output size in pixels.
        pointwise: a 1x1 kernel with stride 1 (no im2col in paddle's own kernel).
    Returns:
        True where the batch-wide GEMM was measured faster than paddle's per-image GEMMs.
    """
    pixels = out_h * out_w
    if pointwise:
        return pixels <= MAX_POINTWISE_GEMM_PIXELS
    return pixels <= MAX_GEMM_PIXELS or c_out * pixels <= MAX_GEMM_OUTPUT


def takes_gemm(layer, x_shape) -> bool:
    """Whether fast_conv_forward runs this supported Conv2D on this input shape as one batch GEMM.

    Args:
        layer: the Conv2D. x_shape: [N, C, H, W].
    Returns:
        uses_gemm for the layer's output size and kernel.
    """
    g = _geometry(layer)
    pointwise = g.kernel == (1, 1) and g.stride == (1, 1)
    return uses_gemm(layer.weight.shape[0], *output_size(layer, x_shape), pointwise=pointwise)


def output_size(layer, x_shape) -> tuple[int, int]:
    """Output height and width of a supported Conv2D for an input shape.

    Args:
        layer: the Conv2D. x_shape: [N, C, H, W].
    Returns:
        (out_h, out_w).
    """
    (kh, kw), (sh, sw), (ph, pw), *_ = _geometry(layer)
    return (x_shape[2] + 2 * ph - kh) // sh + 1, (x_shape[3] + 2 * pw - kw) // sw + 1


def global_window(layer, x_shape) -> bool:
    """Whether every output window of a supported Conv2D covers the whole input (the same rule as csrc's).

    The oneDNN operator then runs the conv as one dense GEMM, without multiplying padding taps.

    Args:
        layer: the Conv2D. x_shape: [N, C, H, W].
    Returns:
        True where output 0's window reaches the last input row and column and the last output's
        window starts at or before the first.
    """
    (kh, kw), (sh, sw), (ph, pw), *_ = _geometry(layer)
    oh, ow = output_size(layer, x_shape)
    return x_shape[2] <= kh - ph and (oh - 1) * sh <= ph and x_shape[3] <= kw - pw and (ow - 1) * sw <= pw


def gemm_conv(layer, x: paddle.Tensor) -> paddle.Tensor:
    """The conv as one GEMM over the whole batch: unfold, [N * pixels, C*k*k] x [C*k*k, C_out].

    Args:
        layer: a supported Conv2D. x: input [N, C, H, W].
    Returns:
        [N, C_out, out_h, out_w], layer's own result to float rounding.
    """
    n, c_in = x.shape[:2]
    g = _geometry(layer)
    (kh, kw), (oh, ow), c_out = g.kernel, output_size(layer, x.shape), layer.weight.shape[0]
    cols = F.unfold(x, [kh, kw], strides=list(g.stride), paddings=list(g.padding))
    cols = cols.transpose([0, 2, 1]).reshape([-1, c_in * kh * kw])  # [N*oh*ow, C*kh*kw]
    out = paddle.matmul(cols, layer.weight.reshape([c_out, -1]), transpose_y=True)  # [N*oh*ow, C_out]
    if layer.bias is not None:
        out = out + layer.bias
    return out.reshape([n, oh * ow, c_out]).transpose([0, 2, 1]).reshape([n, c_out, oh, ow])


def paddle_conv(layer, x: paddle.Tensor) -> paddle.Tensor:
    """Paddle's conv kernel, with the bias added as [C, 1, 1] (a fast broadcast) rather than [1, C, 1, 1].

    Args:
        layer: a supported Conv2D. x: input [N, C, H, W].
    Returns:
        [N, C_out, out_h, out_w].
    """
    g = _geometry(layer)
    out = F.conv2d(x, layer.weight, None, list(g.stride), list(g.padding))
    return out if layer.bias is None else out + layer.bias.reshape([-1, 1, 1])


def dnnl_conv(layer, x: paddle.Tensor) -> paddle.Tensor:
    """The conv and its bias through the compiled oneDNN operator (onednn_conv.load() must have succeeded).

    Args:
        layer: a supported Conv2D. x: input [N, C, H, W].
    Returns:
        [N, C_out, out_h, out_w].
    """
    g = _geometry(layer)
    return onednn_conv.conv2d(x, layer.weight, g.stride, g.padding, layer.bias)


def _eager_on_cpu(x: paddle.Tensor) -> bool:
    """Whether x is an eager CPU tensor: graph capture (to_static) and GPUs take paddle's own forward."""
    return paddle.in_dynamic_mode() and not in_sot_tracing() and x.place.is_cpu_place()


def _eager_one_pixel_maps(x: paddle.Tensor) -> bool:
    """Whether x is an eager CPU [N, C, 1, 1] batch: FastBatchNorm2D and FastGlobalAvgPool2D shortcut those."""
    return _eager_on_cpu(x) and x.ndim == 4 and x.shape[2] * x.shape[3] == 1


def fast_conv_forward(layer, x: paddle.Tensor) -> paddle.Tensor:
    """Conv2D forward for CPU: gemm_conv for small outputs, paddle_conv otherwise.

    Args:
        layer: a paddle.nn.Conv2D that `supported` accepts.
        x: input [N, C, H, W].
    Returns:
        The same values layer's own forward returns.
    """
    if not _eager_on_cpu(x):
        return paddle.nn.Conv2D.forward(layer, x)  # graph capture (to_static), GPU: paddle's own
    if layer.__dict__.get("_fast_conv_onednn"):
        return dnnl_conv(layer, x)
    if takes_gemm(layer, x.shape):
        return gemm_conv(layer, x)
    return paddle_conv(layer, x)


class FastConv2D(paddle.nn.Conv2D):
    """paddle.nn.Conv2D whose forward is fast_conv_forward; `enable` turns Conv2D layers into it.

    A subclass rather than a patched instance attribute: to_static's default (SOT) tracer cannot
    follow an instance-level forward, and hooks keyed by layer type can still be given this type.
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return fast_conv_forward(self, x)


_LOWEST_FLOAT32 = -3.4028234663852886e38  # -FLT_MAX


class FastMaxPool2D(paddle.nn.MaxPool2D):
    """paddle.nn.MaxPool2D whose CPU forward keeps the argmax indices (`return_mask=True`).

    Paddle 3.3.1's plain max-pool backward re-scans every window to find the maximum again: 2.3 ms
    fwd+bwd for LeNet's 128x6x28x28 pool on an AMD EPYC, against 0.7 ms for the indexed kernel,
    whose backward is a scatter. Same values and the same gradient (both pick a window's first
    maximum; tests/test_fast_conv.py compares them over the registry).
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # The indexed kernel maps a NaN window to -FLT_MAX, and its backward writes at index -1 (heap
        # corruption) for a window with nothing above -FLT_MAX: such inputs take paddle's own pool.
        if not _eager_on_cpu(x) or not bool(paddle.all(x > _LOWEST_FLOAT32)):
            return paddle.nn.MaxPool2D.forward(self, x)
        return F.max_pool2d(x, self.ksize, self.stride, self.padding, return_mask=True,
                            ceil_mode=self.ceil_mode, data_format=self.data_format)[0]


class FastBatchNorm2D(paddle.nn.BatchNorm2D):
    """paddle.nn.BatchNorm2D that normalises a 1x1 feature map through the [N, C] ("NC") kernel.

    Paddle 3.3.1's NCHW batch-norm kernel is slow when each channel has one pixel per image:
    forward + backward of [128, 512, 1, 1] took 1.22 ms on an AMD EPYC (Zen 4), against 0.16 ms
    for the same values as [128, 512] (ResNet18's layer4 at 32x32 input has five such layers).
    At 1x1 the two layouts are the same memory, so the reshape copies nothing; every other input,
    and graph capture, takes paddle's own forward. Same statistics, running averages and gradients
    to float rounding (tests/test_fast_conv.py).
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not _eager_one_pixel_maps(x):
            return paddle.nn.BatchNorm2D.forward(self, x)
        n, c = x.shape[:2]
        out = F.batch_norm(x.reshape([n, c]), self._mean, self._variance, weight=self.weight, bias=self.bias,
                           training=self.training, momentum=self._momentum, epsilon=self._epsilon,
                           data_format="NC", use_global_stats=self._use_global_stats)
        return out.reshape([n, c, 1, 1])


class FastGlobalAvgPool2D(paddle.nn.AdaptiveAvgPool2D):
    """paddle.nn.AdaptiveAvgPool2D(1) that passes a 1x1 map through: the average of one value is that value.

    Paddle's pool kernel took 1.8 ms forward + backward on [128, 512, 1, 1] (AMD EPYC, Zen 4) for
    what is an identity (ResNet18's last pool at 32x32 input); the view costs 0.02 ms. Bit-identical
    values and gradient; larger maps and graph capture take paddle's own forward.
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not _eager_one_pixel_maps(x):
            return paddle.nn.AdaptiveAvgPool2D.forward(self, x)
        return x.view(x.shape)  # a new tensor sharing x's memory (reshape to the same shape returns x itself)


class FastAvgPool2D(paddle.nn.AvgPool2D):
    """paddle.nn.AvgPool2D through the compiled oneDNN operator (enable sets it only when that loaded).

    Paddle 3.3.1's CPU average pool took 0.8 ms forward + backward on LeNet's [128, 16, 10, 10] map
    (AMD EPYC, Zen 4) against 0.2 ms for oneDNN's kernel. Same values and gradient to float rounding
    (tests/test_fast_conv.py); non-float32 inputs and graph capture take paddle's own forward.
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not _eager_on_cpu(x) or x.dtype != paddle.float32:
            return paddle.nn.AvgPool2D.forward(self, x)
        kernel = as_pair(self.ksize)
        stride = kernel if self.stride is None else as_pair(self.stride)  # paddle's default stride is the kernel
        return onednn_conv.avg_pool2d(x, kernel, stride, as_pair(self.padding), self.exclusive)


def _is_pair(value) -> bool:
    return isinstance(value, int) or (isinstance(value, (list, tuple)) and len(value) == 2
                                      and all(isinstance(v, int) for v in value))


def _avg_pool_fits(layer) -> bool:
    """An AvgPool2D the oneDNN kernel computes identically: NCHW, floor mode, symmetric padding below the kernel."""
    if not (type(layer) is paddle.nn.AvgPool2D and layer.data_format == "NCHW" and not layer.ceil_mode
            and layer.divisor is None and _is_pair(layer.ksize) and _is_pair(layer.padding)
            and (layer.stride is None or _is_pair(layer.stride))):
        return False
    return all(p < k for p, k in zip(as_pair(layer.padding), as_pair(layer.ksize)))


def _global_pool_fits(layer) -> bool:
    """An AdaptiveAvgPool2D to 1x1 over NCHW."""
    return (type(layer) is paddle.nn.AdaptiveAvgPool2D and layer._data_format == "NCHW"
            and layer._output_size in (1, [1, 1], (1, 1)))


def _indexed_pool_fits(layer) -> bool:
    """A MaxPool2D the indexed kernel computes identically: NCHW, numeric padding, no mask asked."""
    return (type(layer) is paddle.nn.MaxPool2D and layer.data_format == "NCHW" and not layer.return_mask
            and not isinstance(layer.padding, str))


# paddle.flops looks up its counting hook by exact layer type: count FastConv2D and FastBatchNorm2D
# as the layers they are (max-pool has no counter in paddle.flops: zero, as for MaxPool2D itself).
FLOPS_CUSTOM_OPS = {FastConv2D: conv_flops_counter(), FastMaxPool2D: count_zero_ops, FastBatchNorm2D: count_bn,
                    FastGlobalAvgPool2D: count_adap_avgpool, FastAvgPool2D: count_avgpool}


def use_onednn(kernel: str) -> bool:
    """Whether runtime.conv_kernel asks for the oneDNN operator here, and it can be had.

    Args:
        kernel: "onednn", "gemm" or "auto" (onednn wherever it builds: measured 1.9-5.3x faster
            than the GEMM path in training on both an Intel Xeon and an AMD EPYC, docs/speed.md).
    Returns:
        True if the layers should run onednn_conv; a requested but unbuildable operator is reported
        once on stderr and False returned.
    """
    if kernel == "gemm":
        DECISIONS["conv_kernel"] = f"gemm (runtime.conv_kernel={kernel}, {cpu_vendor()})"
        return False
    if onednn_conv.load() is not None:
        DECISIONS["conv_kernel"] = f"onednn (runtime.conv_kernel={kernel}, {cpu_vendor()})"
        return True
    DECISIONS["conv_kernel"] = f"gemm (oneDNN operator unavailable: {onednn_conv.unavailable_reason()})"
    if not _warned:
        _warned.append(True)
        print(f"warning: runtime.conv_kernel={kernel}: the oneDNN conv operator is unavailable "
              f"({onednn_conv.unavailable_reason()}); convs take fast_conv's GEMM path.", file=sys.stderr)
    return False


_warned: list = []


def enable(net, onednn: bool = False) -> int:
    """Turn every supported plain Conv2D of net into a FastConv2D (in place, this instance only).

    Subclasses of Conv2D are left alone: their own forward may do more than the convolution.

    Args:
        net: a paddle.nn.Layer; parameters and state_dict keys are unchanged.
        onednn: run the convs through onednn_conv (use_onednn decides) instead of GEMM/paddle by shape,
            and average pools through its pooling kernel.
    Returns:
        The number of Conv2D layers switched.
    """
    switched = 0
    for layer in net.sublayers(include_self=True):
        if type(layer) is paddle.nn.Conv2D and supported(layer):
            layer.__dict__["_fast_conv_geometry"] = conv_geometry(layer)
            layer.__dict__["_fast_conv_onednn"] = onednn
            layer.__class__ = FastConv2D
            switched += 1
        elif _indexed_pool_fits(layer):
            layer.__class__ = FastMaxPool2D  # no parameters: nothing else changes
        elif type(layer) is paddle.nn.BatchNorm2D and layer._data_format == "NCHW":
            layer.__class__ = FastBatchNorm2D  # same parameters and buffers
        elif _global_pool_fits(layer):
            layer.__class__ = FastGlobalAvgPool2D
        elif onednn and _avg_pool_fits(layer):
            layer.__class__ = FastAvgPool2D
    return switched
