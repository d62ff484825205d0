"""What every `paddle-cnn bench` mode shares: the models to time, timing, sgemm, load, the environment."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle

from .. import runtime
from ..config import Config, build_config
from ..errors import ConfigError
from ..registry import build_model, model_info

WARMUP_STEPS = 2
# Seconds of idling before each timed repetition, longer than KMP_BLOCKTIME's 200 ms default.
SETTLE_SECONDS = 0.25
SGEMM_N = 2048
# Cores' worth of CPU time other processes used in the second before the bench above which the
# result carries a "machine was busy" note (the load average lags by minutes, so it is not used).
BUSY_CORES = 0.25


@dataclass
class BenchSpec:
    """One model to bench: registry name, optional stem, the label shown and the input shape."""

    name: str
    stem: str | None
    label: str
    shape: tuple[int, int, int]


def parse_models(text: str) -> list[BenchSpec]:
    """Parse --models ("lenet,resnet18:cifar") and check every entry builds before anything is timed.

    Args:
        text: comma-separated registry names, each optionally followed by :stem.
    Returns:
        The specs. Raises ConfigError naming the entry (unknown model lists the valid ones).
    """
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, stem = item.partition(":")
        try:
            info = model_info(name)  # each model at its native input size and channels
            spec = BenchSpec(name, stem or None, item, (info.in_channels, info.input_size, info.input_size))
            build_model(name, **bench_config(spec, 1).model.options())  # unknown stem/option fails here
        except ConfigError as exc:
            raise ConfigError(f"--models {item!r}: {exc}") from None
        specs.append(spec)
    if not specs:
        raise ConfigError("--models is empty; give comma-separated model names, e.g. lenet,resnet18:cifar.")
    return specs


def bench_config(spec: BenchSpec, batch: int, fast_conv: bool = False, conv_kernel: str = "auto") -> Config:
    """The training config the bench builds the model from (SGD, constant lr, CPU).

    Args:
        spec: the model to bench.
        batch: batch size.
        fast_conv: the config's runtime.fast_conv.
        conv_kernel: the config's runtime.conv_kernel (auto is what train runs by default).
    Returns:
        A validated Config.
    """
    model = {"name": spec.name, "in_channels": spec.shape[0]}
    if spec.stem:
        model["stem"] = spec.stem
    data = {"data": {"name": "mnist" if spec.shape[0] == 1 else "cifar10"}, "model": model,
            "optimizer": {"name": "sgd", "lr": 0.01}, "train": {"batch_size": batch, "epochs": 1},
            "runtime": {"device": "cpu", "fast_conv": fast_conv, "conv_kernel": conv_kernel}}
    return build_config(data, source="paddle-cnn bench")


def random_batch(shape: tuple[int, int, int], batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random batch in the form BatchLoader yields.

    Args:
        shape: (C, H, W). batch: images. seed: RNG seed.
    Returns:
        (images float32 (B, C, H, W), labels int64 (B, 1)).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *shape), dtype=np.float32)
    return x, rng.integers(0, 10, size=(batch, 1)).astype(np.int64)


def time_sides(sides: dict, batch: int, steps: int, repeats: int, warmup: int = WARMUP_STEPS) -> dict:
    """Images/s of each side's step, repetitions alternating between sides.

    Args:
        sides: {name: step()}.
        batch: images per step.
        steps: timed steps per repetition.
        repeats: repetitions.
        warmup: untimed steps per side first (plus one per repetition after the settle pause).
    Returns:
        {name: [images/s of each repetition]}.
    """
    for step in sides.values():
        for _ in range(warmup):
            step()
    rates = {name: [] for name in sides}
    for _ in range(repeats):
        for name, step in sides.items():
            if len(sides) > 1:
                time.sleep(SETTLE_SECONDS)
                step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates[name].append(batch * steps / (time.perf_counter() - start))
    return rates


def sgemm_gflops(n: int = SGEMM_N, repeats: int = 5) -> float:
    """Median GFLOP/s of numpy's float32 n x n matmul (2 n^3 FLOPs), one warm-up call first.

    Args:
        n: matrix side. repeats: timed calls.
    Returns:
        GFLOP/s.
    """
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def environment(threads: int) -> dict:
    """Versions, CPU and thread settings of this run.

    Args:
        threads: the OMP_NUM_THREADS in effect.
    Returns:
        A JSON-ready dict.
    """
    decisions = runtime.DECISIONS or runtime.setup(environ=dict(os.environ))
    return {
        "versions": runtime.versions(),
        "cpu": runtime.cpu_record(),
        "omp_num_threads": threads,
        "threads_source": decisions.get("threads_source"),
        "mkl_debug_cpu_type": os.environ.get("MKL_DEBUG_CPU_TYPE"),
        "mkl_debug_cpu_type_source": decisions.get("mkl_debug_cpu_type_source"),
        "paddle_flags": paddle.get_flags(["FLAGS_use_mkldnn", "FLAGS_use_onednn"]),
        # How idle OpenMP threads wait (Intel OpenMP in paddle, libgomp in PyTorch): on a shared
        # machine spinning threads lose the core to other processes and every op waits for them.
        "openmp_wait": {k: os.environ.get(k) for k in ("KMP_BLOCKTIME", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
    }


def busy_cores(seconds: float = 1.0) -> float | None:
    """CPU time the whole machine used over a short sample, in cores (Linux /proc/stat).

    Args:
        seconds: length of the sample.
    Returns:
        Busy cores (0 = idle, 2.0 = both of 2 cores busy), or None where /proc/stat is unreadable.
    """
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    cpus = os.cpu_count() or 1
    return cpus * (1 - (idle1 - idle0) / max(1, total1 - total0))


def notes(busy: float | None, with_torch: bool, torch_ok: bool) -> list[str]:
    """Caveats printed under the table: a busy machine, PyTorch missing."""
    lines = []
    if busy is not None and busy > BUSY_CORES:
        lines.append(f"the machine was busy ({busy:.1f} cores in use by other processes just before the bench): "
                     f"that slows multi-threaded runs most (OpenMP threads wait for a descheduled peer); "
                     f"repeat on an idle machine before comparing numbers.")
    if with_torch and not torch_ok:
        lines.append("PyTorch is not installed: torch column skipped (pip install torch to compare).")
    return lines


def fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)
