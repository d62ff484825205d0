"""`paddle-cnn bench`: training images/s of this project's real training step, against PyTorch and sgemm.

The paddle side is exactly what `paddle-cnn train` runs: the config's network from
network.build_network, wrapped by engine.prepare_model (paddle.Model with SGD, CrossEntropyLoss,
Accuracy), timed through `model.train_batch([x], [y])`, the call hapi's fit makes once per batch,
on a fixed random numpy batch (fit also hands it numpy arrays). The PyTorch side
(torch_twins.py) is the same network and step, in the same process, with as many threads.

Timing: warm-up steps are excluded; each repetition times `steps` steps; the median repetition
is reported. Paddle and PyTorch repetitions alternate, so a burst of load from other processes
hits both sides rather than one; before each side's repetition the process sleeps briefly,
because paddle's Intel OpenMP threads keep spinning for up to 200 ms (KMP_BLOCKTIME) after their
last parallel region and would otherwise steal the cores from PyTorch's first steps (and libgomp's
from paddle's).

Achieved GFLOP/s = 6 x MACs/image x images/s (forward 2 FLOPs per MAC, backward about twice the
forward), MACs from paddle.flops; it is compared with numpy's float32 2048x2048 matmul in the
same run, a practical ceiling for this CPU and thread count.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time

import paddle

from .. import callbacks, engine, network, onednn_conv, report, runtime
from .. import fast_conv as fast_conv_module
from ..config import Config
from ..errors import ConfigError
from . import torch_twins
from .common import (
    SETTLE_SECONDS,
    SGEMM_N,
    WARMUP_STEPS,
    BenchSpec,
    bench_config,
    busy_cores,
    environment,
    fmt,
    notes,
    random_batch,
    sgemm_gflops,
    time_sides,
)

EPOCH_IMAGES = 2048
# What is timed: paddle's own conv (runtime.fast_conv false), fast_conv's GEMM path (conv_kernel
# gemm), the compiled oneDNN operator (conv_kernel onednn, wherever it builds: on every CPU, so that
# auto's per-vendor choice rests on a measurement), and PyTorch. "fast_conv" is whichever of gemm /
# onednn `train` runs here by default (fast_conv true, conv_kernel auto), copied, not timed twice.
SIDES = ("paddle", "gemm", "onednn", "torch")
# Row-key prefix of each paddle side's ratio to PyTorch and fraction of sgemm (e.g. "gemm_ratio";
# the paddle side's "ratio" and "sgemm_fraction" predate the others).
PREFIX = {"paddle": "", "gemm": "gemm_", "onednn": "onednn_", "fast_conv": "fast_conv_"}


def paddle_train_step(spec: BenchSpec, batch: int, fast_conv: bool = False, conv_kernel: str = "auto"):
    """The project's training step for a model: build_network + prepare_model + train_batch.

    Args:
        spec: the model. batch: images per step.
        fast_conv: the config's runtime.fast_conv (true is what `train` runs by default).
        conv_kernel: the config's runtime.conv_kernel (auto is the default).
    Returns:
        (prepared paddle.Model, cfg, step() running model.train_batch on a fixed batch).
    """
    cfg = bench_config(spec, batch, fast_conv, conv_kernel)
    net = network.build_network(cfg)
    model = engine.prepare_model(cfg, net, spec.shape, max(1, EPOCH_IMAGES // batch))
    x, y = random_batch(spec.shape, batch)

    def step():
        return model.train_batch([x], [y])

    return model, cfg, step


def model_macs(cfg: Config, shape: tuple[int, int, int]) -> int:
    """MACs per image by paddle.flops, on a separate instance (its forward would move BN statistics).

    Args:
        cfg: the bench config. shape: (C, H, W).
    Returns:
        Multiply-accumulates per image.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        return report.count_macs(network.build_network(cfg), shape)


class _EpochTimer(paddle.callbacks.Callback):
    """Times the training part of each epoch the way engine's RunRecorder does (epoch begin to end)."""

    def __init__(self):
        super().__init__()
        self.meter = callbacks.LossMeter()
        self.seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.meter.reset()
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, step, logs=None):
        self.meter.add(logs)

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.t0


def epoch_rate(model, spec: BenchSpec, batch: int, images: int = EPOCH_IMAGES) -> float:
    """Images/s of one `model.fit` epoch on random in-memory data through data.BatchLoader.

    Args:
        model: a prepared (and already warmed-up) paddle.Model.
        spec: its bench spec. batch: batch size. images: images in the epoch.
    Returns:
        Training images/s as RunRecorder measures them.
    """
    from ..data import BatchLoader, Split

    x, y = random_batch(spec.shape, images, seed=1)
    loader = BatchLoader(Split(x, y.reshape(-1)), batch, shuffle=True, seed=0)
    timer = _EpochTimer()
    # PyTorch's side runs just before: let its spinning OpenMP threads go idle (see SETTLE_SECONDS),
    # or they take the cores from the first steps of an epoch that lasts well under a second for LeNet.
    time.sleep(SETTLE_SECONDS)
    model.fit(loader, epochs=1, verbose=0,
              callbacks=[timer, paddle.callbacks.LRScheduler(by_step=True, by_epoch=False)])
    return timer.meter.count / timer.seconds


def bench_model(spec: BenchSpec, batch: int, steps: int, repeats: int, threads: int,
                with_torch: bool, epoch: bool = False) -> dict:
    """Bench one model: paddle (and PyTorch) training images/s, MACs, optionally a fit epoch.

    Args:
        spec: the model. batch, steps, repeats: see time_sides.
        threads: PyTorch threads (paddle's OMP_NUM_THREADS).
        with_torch: time the PyTorch twin too (when the model has one).
        epoch: also time one fit epoch of EPOCH_IMAGES random images (train's default: fast_conv).
    Returns:
        One result row (JSON-ready).
    """
    model, cfg, step = paddle_train_step(spec, batch, fast_conv=True)
    default_kernel = "onednn" if fast_conv_module.use_onednn(cfg.runtime.conv_kernel) else "gemm"
    sides = {"paddle": paddle_train_step(spec, batch, fast_conv=False)[2], default_kernel: step}
    other = "gemm" if default_kernel == "onednn" else "onednn"
    if other == "gemm" or onednn_conv.load() is not None:
        sides[other] = paddle_train_step(spec, batch, fast_conv=True, conv_kernel=other)[2]
    row = {"model": spec.label, "name": spec.name, "stem": spec.stem, "input": list(spec.shape), "batch": batch,
           "macs_per_image": model_macs(cfg, spec.shape), "torch_note": None, "default_kernel": default_kernel}
    if with_torch and spec.name in torch_twins.TORCH_MODELS:
        sides["torch"] = torch_twins.torch_train_step(spec.name, spec.shape, batch, threads, spec.stem)
    elif with_torch:
        row["torch_note"] = f"no PyTorch twin of {spec.name} in torch_twins.py"
    rates = time_sides(sides, batch, steps, repeats)
    rates["fast_conv"] = rates[default_kernel]
    for side in (*SIDES, "fast_conv"):
        row[f"{side}_repeats"] = rates.get(side)
        row[f"{side}_images_per_s"] = statistics.median(rates[side]) if side in rates else None
        row[f"{side}_gflops"] = (6 * row["macs_per_image"] * row[f"{side}_images_per_s"] / 1e9
                                 if side in rates else None)
    for side, prefix in PREFIX.items():
        row[f"{prefix}ratio"] = (row[f"{side}_images_per_s"] / row["torch_images_per_s"]
                                 if "torch" in rates and side in rates else None)
    if epoch:
        row["epoch_images_per_s"] = epoch_rate(model, spec, batch)
        row["epoch_vs_bench"] = row["epoch_images_per_s"] / row["fast_conv_images_per_s"]
    return row


def run_bench(specs: list[BenchSpec], batch: int, steps: int, repeats: int, with_torch: bool = True,
              epoch: bool = False, log=print) -> dict:
    """Bench every model and measure sgemm before and after.

    Args:
        specs: models (parse_models). batch, steps, repeats: see time_sides.
        with_torch: include PyTorch when it is installed.
        epoch: also time one fit epoch per model.
        log: progress lines.
    Returns:
        The full result (JSON-ready): environment, sgemm, load, notes, rows.
    """
    if min(batch, steps, repeats) < 1:
        raise ConfigError(f"--batch, --steps and --repeats must be at least 1 (got {batch}, {steps}, {repeats}).")
    runtime.select_device("cpu")
    threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
    result = {"command": runtime.COMMAND, "batch": batch, "steps": steps, "repeats": repeats,
              "warmup_steps": WARMUP_STEPS, **environment(threads), "load_average_before": os.getloadavg(),
              "busy_cores_before": busy_cores()}
    torch_ok = with_torch and torch_twins.torch_available()
    result["notes"] = notes(result["busy_cores_before"], with_torch, torch_ok)
    if torch_ok:
        result["versions"]["torch"] = torch_twins.torch_info()["version"]
    sgemm = [sgemm_gflops()]
    rows = []
    for spec in specs:
        log(f"bench {spec.label} {spec.shape} batch {batch} ...")
        rows.append(bench_model(spec, batch, steps, repeats, threads, torch_ok, epoch))
    sgemm.append(sgemm_gflops())
    # The faster of the two runs: the CPU's capability when least disturbed by other load.
    result["sgemm"] = {"n": SGEMM_N, "gflops": max(sgemm), "runs_gflops": sgemm}
    for row in rows:
        for side, prefix in PREFIX.items():
            gflops = row[f"{side}_gflops"]
            row[f"{prefix}sgemm_fraction"] = gflops / result["sgemm"]["gflops"] if gflops else None
    if torch_ok:
        result["torch_threads"] = torch_twins.torch_info()["threads"]
    result["load_average_after"] = os.getloadavg()
    result["rows"] = rows
    return result


def format_table(result: dict) -> str:
    """The bench result as a Markdown table plus the settings it was measured under.

    Args:
        result: run_bench output.
    Returns:
        Text for the terminal.
    """
    epoch = any("epoch_images_per_s" in r for r in result["rows"])
    head = ["model", "input", "batch", "conv", "paddle img/s", "torch img/s", "paddle/torch", "achieved GFLOP/s",
            "% of sgemm"] + (["fit epoch img/s", "epoch/bench"] if epoch else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (len(head) - 4)]
    for r in result["rows"]:
        kernel = r.get("default_kernel", "gemm")
        for side in ("paddle", "gemm", "onednn"):
            if r.get(f"{side}_images_per_s") is None:
                continue
            prefix = PREFIX[side]
            conv = "paddle" if side == "paddle" else f"fast_conv {side}" + (" (default)" if side == kernel else "")
            ratio = r[f"{prefix}ratio"]
            cells = [r["model"], "x".join(map(str, r["input"])), str(r["batch"]), conv,
                     f"{r[side + '_images_per_s']:,.1f}", fmt(r["torch_images_per_s"], ",.1f"),
                     fmt(ratio, ".2f") + ("x" if ratio else ""), f"{r[side + '_gflops']:.1f}",
                     f"{100 * r[prefix + 'sgemm_fraction']:.1f}%"]
            if epoch:
                cells += ([fmt(r.get("epoch_images_per_s"), ",.1f"), fmt(r.get("epoch_vs_bench"), ".2f")]
                          if side == kernel else ["", ""])
            lines.append("| " + " | ".join(cells) + " |")
    cpu = result["cpu"]
    lines += [
        "",
        f"threads: OMP_NUM_THREADS={result['omp_num_threads']} ({result['threads_source']})"
        + (f", torch.set_num_threads({result['torch_threads']})" if "torch_threads" in result else ""),
        f"CPU: {cpu['vendor']} {cpu['model']}, {cpu['cores']} usable cores; MKL_DEBUG_CPU_TYPE="
        f"{result['mkl_debug_cpu_type'] or 'unset'} ({result['mkl_debug_cpu_type_source']})",
        f"numpy sgemm {SGEMM_N}x{SGEMM_N} float32: {result['sgemm']['gflops']:.1f} GFLOP/s; "
        f"achieved GFLOP/s = 6 x MACs/image x paddle img/s (MACs from paddle.flops); conv: paddle = Paddle's "
        f"conv kernel (runtime.fast_conv false), fast_conv gemm = its batch-GEMM/paddle path by shape "
        f"(conv_kernel gemm), fast_conv onednn = the compiled oneDNN operator; (default) = what train runs here",
        f"other load before: {fmt(result['busy_cores_before'], '.2f')} cores busy; load average (1/5/15 min) "
        f"before {_loads(result['load_average_before'])}, "
        f"after {_loads(result['load_average_after'])}; {result['steps']} steps x {result['repeats']} repeats, "
        f"median, {result['warmup_steps']} warm-up steps excluded",
    ]
    caveats = result["notes"] + [f"{r['model']}: {r['torch_note']}" for r in result["rows"] if r["torch_note"]]
    return "\n".join(lines + [f"note: {n}" for n in caveats])


def _loads(values) -> str:
    return "/".join(f"{v:.2f}" for v in values)
