"""Conv2D (and AvgPool2D) through oneDNN for CPU training: compiled Paddle custom operators (csrc/).

Paddle 3.3.1's eager CPU conv is im2col plus one GEMM per image; oneDNN's direct convolution
(blocked layouts, kernels for the CPU's vector width) ran ResNet layers 3-5x faster forward plus
backward on an Intel Xeon (`paddle-cnn bench --conv`). Paddle ships oneDNN's library
(paddle/libs/libdnnl.so.3) but not its headers, so csrc/third_party holds oneDNN 3.6's, and the
operator is built against them with paddle.utils.cpp_extension the first time it is needed
(~30 s), into a cache directory keyed by the source, Paddle and Python versions. Without a
compiler, or if the build fails, `load` returns None, `unavailable_reason` says why, and
fast_conv's other paths run; nothing else changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import sys
from pathlib import Path

CSRC = Path(__file__).parent / "csrc"
# One extension module: the conv (with its dense-GEMM case) and the average pool, sharing onednn_common.h.
SOURCES = (CSRC / "onednn_conv.cc", CSRC / "onednn_pool.cc")
HEADERS = CSRC / "third_party"
_state: dict = {}  # "module" once loaded, or "reason" once it failed: one attempt per process


def cache_dir() -> Path:
    """Where the built operator lives: $PADDLE_CNN_CACHE, else ~/.cache/paddle_cnn, per build key.

    Returns:
        The directory for this source, Paddle version and install, and Python version.
    """
    import paddle

    # The install path too: the built library's rpath points into this Paddle's libs directory.
    build = f"{paddle.__version__} {paddle.__file__} {sys.version}"
    sources = b"".join(path.read_bytes() for path in (*SOURCES, CSRC / "onednn_common.h"))
    key = hashlib.sha256(sources + build.encode()).hexdigest()[:16]
    root = Path(os.environ.get("PADDLE_CNN_CACHE") or Path.home() / ".cache" / "paddle_cnn")
    return root / f"onednn_conv-{key}"


@contextlib.contextmanager
def _quiet(log_path: Path):
    """Send stdout and stderr, Python's and the descriptors', to log_path: cpp_extension prints compiler lines."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        os.dup2(log.fileno(), 1)  # the compiler's own output (a subprocess) as well as Python's prints
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _build(build_dir: Path):
    import paddle

    libs = Path(paddle.__file__).parent / "libs"
    build_dir.mkdir(parents=True, exist_ok=True)
    # One builder at a time: a data-parallel launch starts two processes that both need the operator.
    with open(build_dir / "build.lock", "w") as lock, _quiet(build_dir / "build.log"):
        # Imported in here: its import warns "No ccache found", which belongs in the build log.
        from paddle.utils.cpp_extension import load as load_extension

        fcntl.flock(lock, fcntl.LOCK_EX)
        return load_extension(
            name="paddle_cnn_onednn_conv", sources=[str(path) for path in SOURCES], build_directory=str(build_dir),
            extra_include_paths=[str(HEADERS)], extra_cxx_cflags=["-O2"],
            # Paddle's own oneDNN, found again at run time through the rpath: one oneDNN per process.
            extra_ldflags=[f"-L{libs}", "-l:libdnnl.so.3", f"-Wl,-rpath,{libs}"], verbose=False)


def load():
    """The compiled operator module, building it on first use; None where it cannot be had.

    Returns:
        The module (its onednn_conv2d is the op), or None (see unavailable_reason).
    """
    if "module" in _state or "reason" in _state:
        return _state.get("module")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        _state["reason"] = f"built for Linux x86-64 only (this is {platform.system()} {platform.machine()})"
        return None
    build_dir = cache_dir()
    try:
        _state["module"] = _build(build_dir)
    except Exception as exc:  # no compiler, a failed build: fall back, and say where the log is
        log = build_dir / "build.log"
        if log.exists():
            where = f"compiler output in {log}"
        elif isinstance(exc, OSError):  # the cache folder itself could not be made
            where = f"{exc}; set PADDLE_CNN_CACHE to a writable folder"
        else:
            where = str(exc)
        _state["reason"] = f"the build failed ({type(exc).__name__}); {where}"
        return None
    return _state["module"]


def unavailable_reason() -> str | None:
    """Why load() returned None, or None if it has not failed.

    Returns:
        A one-line reason.
    """
    return _state.get("reason")


def conv2d(x, weight, stride: tuple[int, int], padding: tuple[int, int], bias=None):
    """The convolution through the oneDNN operator (load() must have returned a module).

    Args:
        x: float32 [N, C, H, W] on the CPU. weight: [O, C, KH, KW].
        stride, padding: (height, width), zero padding on both sides.
        bias: [O] or None; added inside the kernel, its gradient summed by the weight-gradient kernel.
    Returns:
        [N, O, out_h, out_w]; gradients flow to x (if it needs one), weight and bias.
    """
    module, attrs = _state["module"], (stride[0], stride[1], padding[0], padding[1], not x.stop_gradient)
    if bias is None:
        return module.onednn_conv2d(x, weight, *attrs)
    return module.onednn_conv2d_bias(x, weight, bias, *attrs)


def avg_pool2d(x, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int], exclusive: bool):
    """Average pooling through the oneDNN operator (load() must have returned a module), floor mode.

    Args:
        x: float32 [N, C, H, W] on the CPU.
        kernel, stride, padding: (height, width), zero padding on both sides.
        exclusive: divide by the window's cells inside the input (paddle's default), else by the whole window.
    Returns:
        [N, C, out_h, out_w]; the gradient flows to x.
    """
    return _state["module"].onednn_avg_pool2d(x, *kernel, *stride, *padding, exclusive)
