"""Float32 parity tolerances derived from the computation, so they hold on every CPU and BLAS path.

Two float32 implementations of the same sum of products round differently: summation order, FMA
use, vector width (AVX2 vs AVX-512) and the BLAS kernel all differ between machines. For a sum of
n products in any order, each result's error is at most gamma_n * sum(|terms|), with
gamma_n = n*u / (1 - n*u) and u = 2**-24 (Higham, Accuracy and Stability of Numerical Algorithms,
2nd ed., eqs. 3.4-3.5). Two implementations therefore differ by at most 2 * gamma_n * sum(|terms|)
per element. This bound is rigorous, yet far below what a wrong index, a transposed kernel or a
dropped term produces: each of those is at least one whole |term|.

sum(|terms|) is computed exactly enough in float64 by running the reference layer on the absolute
values of its input, weights and upstream gradient: conv, linear, average pooling and their
gradients are sums of products of two of those factors, so with every factor made non-negative
the same computation returns the sum of the terms' magnitudes, element by element.
"""

from __future__ import annotations

import numpy as np
import paddle

U32 = 2.0 ** -24  # unit roundoff of float32, round to nearest


def gamma(n: int) -> float:
    """Higham's gamma_n for float32.

    Args:
        n: the number of rounded operations in the longest sum.
    Returns:
        n*u / (1 - n*u).
    """
    assert n * U32 < 1, n
    return n * U32 / (1 - n * U32)


def assert_within_rounding(got: np.ndarray, expected: np.ndarray, magnitude: np.ndarray, n: int,
                           what: str = "") -> None:
    """Assert |got - expected| <= 2 * gamma_n * magnitude element by element.

    Args:
        got: the float32 result under test.
        expected: the float32 reference result.
        magnitude: per element, the sum of the absolute values of the terms (float64).
        n: the longest reduction (terms per output element, plus one for a bias).
        what: a name for the failure message.
    """
    assert got.shape == expected.shape == magnitude.shape, (what, got.shape, expected.shape, magnitude.shape)
    bound = 2 * gamma(n) * magnitude
    excess = np.abs(got.astype(np.float64) - expected.astype(np.float64)) - bound
    worst = int(np.argmax(excess))
    assert excess.flat[worst] <= 0, (
        f"{what}: element {np.unravel_index(worst, got.shape)} differs by "
        f"{abs(float(got.flat[worst]) - float(expected.flat[worst])):.3g}, over the rounding bound "
        f"{float(bound.flat[worst]):.3g} (n={n}, sum|terms|={float(magnitude.flat[worst]):.3g})")


def magnitudes(make_layer, state: dict, x: np.ndarray, upstream: np.ndarray,
               abs_input: bool = True) -> list[np.ndarray]:
    """Sum of |terms| of a bilinear layer's output, input gradient and parameter gradients.

    Args:
        make_layer: builds a fresh reference layer (it is cast to float64 here).
        state: the layer's float32 state_dict, whose absolute values are used.
        x: the float32 input.
        upstream: the gradient flowing into the output.
        abs_input: False for max pooling, whose routing must follow the real input (its
            output is a selection, exact in any precision).
    Returns:
        [output, x.grad, *param.grad for parameters in order], float64 numpy arrays.
    """
    layer = make_layer()
    layer.to(dtype="float64")
    layer.set_state_dict({k: paddle.to_tensor(np.abs(v.numpy()).astype(np.float64)) for k, v in state.items()})
    x64 = paddle.to_tensor((np.abs(x) if abs_input else x).astype(np.float64), stop_gradient=False)
    out = layer(x64)
    (out * paddle.to_tensor(np.abs(upstream).astype(np.float64))).sum().backward()
    return [np.abs(out.numpy()), x64.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]


def conv_reduction_length(batch: int, c_in: int, c_out: int, kernel: tuple[int, int],
                          out_hw: tuple[int, int]) -> int:
    """The longest sum in a conv's forward and backward pass.

    Args:
        batch: images per batch.
        c_in: input channels.
        c_out: output channels.
        kernel: (kh, kw).
        out_hw: output (height, width).
    Returns:
        max of: terms per output (+1 for the bias), per input gradient, per weight/bias gradient.
    """
    taps = kernel[0] * kernel[1]
    return max(c_in * taps + 1, c_out * taps, batch * out_hw[0] * out_hw[1])


def _outputs_and_grads(net, x: np.ndarray, dtype: str) -> list[np.ndarray]:
    """Logits and every parameter gradient of sum(logits * fixed weights), in the given precision."""
    logits = net(paddle.to_tensor(x.astype(dtype)))
    weights = np.random.default_rng(7).standard_normal(logits.shape).astype(dtype)
    (logits * paddle.to_tensor(weights)).sum().backward()
    return [logits.numpy()] + [p.grad.numpy() for p in net.parameters() if not p.stop_gradient]


def assert_network_within_rounding(make_net, state: dict, candidate, x: np.ndarray, chain: int) -> None:
    """Assert a float32 network equals the float32 reference network to float32 rounding.

    A whole network has no closed-form bound like a single layer (activations and pooling are
    not bilinear), so the truth is the reference network in float64, and each tensor may differ
    from it by the larger of: 2 * gamma_chain * its largest float64 magnitude (chain = the
    rounded operations on the longest path through the forward and backward pass), and four
    times the reference's own float32 error on this machine (what its kernels achieve here).

    Args:
        make_net: builds the reference network.
        state: the reference's float32 state_dict (the candidate holds the same weights).
        candidate: the network under test, in train or eval mode like the reference built here.
        x: float32 input batch.
        chain: rounded operations on the longest path (forward reductions + backward reductions).
    """
    reference = make_net()
    reference.set_state_dict(state)
    ref32 = _outputs_and_grads(reference, x, "float32")
    ref64_net = make_net()
    ref64_net.to(dtype="float64")
    ref64_net.set_state_dict({k: paddle.to_tensor(v.numpy().astype(np.float64)) for k, v in state.items()})
    ref64 = _outputs_and_grads(ref64_net, x, "float64")
    got = _outputs_and_grads(candidate, x, "float32")
    names = ["logits"] + [name for name, p in candidate.named_parameters() if not p.stop_gradient]
    assert len(got) == len(ref32) == len(ref64) == len(names)
    for g, r32, r64, name in zip(got, ref32, ref64, names):
        own = float(np.abs(r32 - r64).max())
        tol = max(2 * gamma(chain) * float(np.abs(r64).max()), 4 * own)
        diff = float(np.abs(g.astype(np.float64) - r64).max())
        assert diff <= tol, f"{name}: differs from the float64 reference by {diff:.3g}, over {tol:.3g} " \
                            f"(the float32 reference itself differs by {own:.3g})"


def chain_length(net, x: np.ndarray) -> int:
    """Rounded operations on the longest path through a network's forward and backward pass.

    Counts, for every conv, linear and batch-norm layer, the longest sum it does forward (terms
    per output) and backward (per weight-gradient entry and per input-gradient entry); the sum
    over layers bounds any path through the network.

    Args:
        net: the network (run once here, in eval mode as the caller set it).
        x: an input batch of the shape to be checked.
    Returns:
        The count, for gamma() in assert_network_within_rounding.
    """
    counts = []

    def hook(layer, inputs, output):
        n_in, n_out = inputs[0].shape, output.shape
        positions = int(np.prod(n_out)) // n_out[1] if len(n_out) == 4 else n_out[0]
        if isinstance(layer, paddle.nn.Conv2D):
            taps = int(np.prod(layer.weight.shape[2:]))
            counts.append(n_in[1] * taps + 1 + positions + n_out[1] * taps)
        elif isinstance(layer, paddle.nn.Linear):
            counts.append(n_in[-1] + 1 + positions + n_out[-1])
        elif isinstance(layer, paddle.nn.BatchNorm2D):
            counts.append(4 * positions)  # mean, variance, and their two backward sums

    handles = [layer.register_forward_post_hook(hook) for layer in net.sublayers()
               if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Linear, paddle.nn.BatchNorm2D))]
    try:
        with paddle.no_grad():
            net(paddle.to_tensor(x))
    finally:
        for handle in handles:
            handle.remove()
    return sum(counts)
