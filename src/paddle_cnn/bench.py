"""`paddle-cnn bench`: training images/s of this project's real training step, against PyTorch and sgemm.

The paddle side is exactly what `paddle-cnn train` runs: the config's network from
network.build_network, wrapped by engine.prepare_model (paddle.Model with SGD, CrossEntropyLoss,
Accuracy), timed through `model.train_batch([x], [y])`, the call hapi's fit makes once per batch,
on a fixed random numpy batch (fit also hands it numpy arrays). The PyTorch side
(bench_torch.py) is the same network and step, in the same process, with as many threads.

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
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle

from . import bench_ops, callbacks, engine, network, report, runtime
from .config import Config, build_config
from .errors import ConfigError
from .registry import build_model, model_info

WARMUP_STEPS = 2
# Seconds of idling before each timed repetition, longer than KMP_BLOCKTIME's 200 ms default.
SETTLE_SECONDS = 0.25
SGEMM_N = 2048
EPOCH_IMAGES = 2048
# Cores' worth of CPU time other processes used in the second before the bench above which the
# result carries a "machine was busy" note (the load average lags by minutes, so it is not used).
BUSY_CORES = 0.25
# What is timed: paddle's own conv (runtime.fast_conv false), what `train` runs by default
# (runtime.fast_conv true), and PyTorch.
SIDES = ("paddle", "fast_conv", "torch")
# Row key of each paddle side's speed relative to PyTorch ("ratio" predates the fast_conv side).
RATIO_KEYS = {"paddle": "ratio", "fast_conv": "fast_conv_ratio"}


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


def bench_config(spec: BenchSpec, batch: int, fast_conv: bool = False) -> Config:
    """The training config the bench builds the model from (SGD, constant lr, CPU).

    Args:
        spec: the model to bench.
        batch: batch size.
        fast_conv: the config's runtime.fast_conv.
    Returns:
        A validated Config.
    """
    model = {"name": spec.name, "in_channels": spec.shape[0]}
    if spec.stem:
        model["stem"] = spec.stem
    data = {"data": {"name": "mnist" if spec.shape[0] == 1 else "cifar10"}, "model": model,
            "optimizer": {"name": "sgd", "lr": 0.01}, "train": {"batch_size": batch, "epochs": 1},
            "runtime": {"device": "cpu", "fast_conv": fast_conv}}
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


def paddle_train_step(spec: BenchSpec, batch: int, fast_conv: bool = False):
    """The project's training step for a model: build_network + prepare_model + train_batch.

    Args:
        spec: the model. batch: images per step.
        fast_conv: the config's runtime.fast_conv (true is what `train` runs by default).
    Returns:
        (prepared paddle.Model, cfg, step() running model.train_batch on a fixed batch).
    """
    cfg = bench_config(spec, batch, fast_conv)
    net = network.build_network(cfg)
    model = engine.prepare_model(cfg, net, spec.shape, max(1, EPOCH_IMAGES // batch))
    x, y = random_batch(spec.shape, batch)

    def step():
        return model.train_batch([x], [y])

    return model, cfg, step


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
    from .data import BatchLoader, Split

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
    from . import bench_torch

    model, cfg, step = paddle_train_step(spec, batch, fast_conv=True)
    sides = {"paddle": paddle_train_step(spec, batch, fast_conv=False)[2], "fast_conv": step}
    row = {"model": spec.label, "name": spec.name, "stem": spec.stem, "input": list(spec.shape), "batch": batch,
           "macs_per_image": model_macs(cfg, spec.shape), "torch_note": None}
    if with_torch and spec.name in bench_torch.TORCH_MODELS:
        sides["torch"] = bench_torch.torch_train_step(spec.name, spec.shape, batch, threads, spec.stem)
    elif with_torch:
        row["torch_note"] = f"no PyTorch twin of {spec.name} in bench_torch.py"
    rates = time_sides(sides, batch, steps, repeats)
    for side in SIDES:
        row[f"{side}_repeats"] = rates.get(side)
        row[f"{side}_images_per_s"] = statistics.median(rates[side]) if side in rates else None
        row[f"{side}_gflops"] = (6 * row["macs_per_image"] * row[f"{side}_images_per_s"] / 1e9
                                 if side in rates else None)
    for side in RATIO_KEYS:
        row[RATIO_KEYS[side]] = row[f"{side}_images_per_s"] / row["torch_images_per_s"] if "torch" in rates else None
    if epoch:
        row["epoch_images_per_s"] = epoch_rate(model, spec, batch)
        row["epoch_vs_bench"] = row["epoch_images_per_s"] / row["fast_conv_images_per_s"]
    return row


def environment(threads: int) -> dict:
    """Versions, CPU and thread settings of this run.

    Args:
        threads: the OMP_NUM_THREADS in effect.
    Returns:
        A JSON-ready dict.
    """
    decisions = runtime.DECISIONS or runtime.setup(environ=dict(os.environ))
    model_name = next((line.split(":", 1)[1].strip() for line in _cpuinfo_lines()
                       if line.startswith("model name")), platform.processor())
    return {
        "versions": {"python": platform.python_version(), "paddle": paddle.__version__, "numpy": np.__version__},
        "cpu": {"vendor": runtime.cpu_vendor(), "model": model_name, "cores": runtime.available_cores()},
        "omp_num_threads": threads,
        "threads_source": decisions.get("threads_source"),
        "mkl_debug_cpu_type": os.environ.get("MKL_DEBUG_CPU_TYPE"),
        "mkl_debug_cpu_type_source": decisions.get("mkl_debug_cpu_type_source"),
        "paddle_flags": paddle.get_flags(["FLAGS_use_mkldnn", "FLAGS_use_onednn"]),
        # How idle OpenMP threads wait (Intel OpenMP in paddle, libgomp in PyTorch): on a shared
        # machine spinning threads lose the core to other processes and every op waits for them.
        "openmp_wait": {k: os.environ.get(k) for k in ("KMP_BLOCKTIME", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
    }


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


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
    from . import bench_torch

    if min(batch, steps, repeats) < 1:
        raise ConfigError(f"--batch, --steps and --repeats must be at least 1 (got {batch}, {steps}, {repeats}).")
    runtime.select_device("cpu")
    threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
    result = {"command": runtime.COMMAND, "batch": batch, "steps": steps, "repeats": repeats,
              "warmup_steps": WARMUP_STEPS, **environment(threads), "load_average_before": os.getloadavg(),
              "busy_cores_before": busy_cores()}
    torch_ok = with_torch and bench_torch.torch_available()
    result["notes"] = _notes(result["busy_cores_before"], with_torch, torch_ok)
    if torch_ok:
        result["versions"]["torch"] = bench_torch.torch_info()["version"]
    sgemm = [sgemm_gflops()]
    rows = []
    for spec in specs:
        log(f"bench {spec.label} {spec.shape} batch {batch} ...")
        rows.append(bench_model(spec, batch, steps, repeats, threads, torch_ok, epoch))
    sgemm.append(sgemm_gflops())
    # The faster of the two runs: the CPU's capability when least disturbed by other load.
    result["sgemm"] = {"n": SGEMM_N, "gflops": max(sgemm), "runs_gflops": sgemm}
    for row in rows:
        row["sgemm_fraction"] = row["paddle_gflops"] / result["sgemm"]["gflops"]
        row["fast_conv_sgemm_fraction"] = row["fast_conv_gflops"] / result["sgemm"]["gflops"]
    if torch_ok:
        result["torch_threads"] = bench_torch.torch_info()["threads"]
    result["load_average_after"] = os.getloadavg()
    result["rows"] = rows
    return result


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


def _notes(busy: float | None, with_torch: bool, torch_ok: bool) -> list[str]:
    """Caveats printed under the table: a busy machine, PyTorch missing."""
    notes = []
    if busy is not None and busy > BUSY_CORES:
        notes.append(f"the machine was busy ({busy:.1f} cores in use by other processes just before the bench): "
                     f"that slows multi-threaded runs most (OpenMP threads wait for a descheduled peer); "
                     f"repeat on an idle machine before comparing numbers.")
    if with_torch and not torch_ok:
        notes.append("PyTorch is not installed: torch column skipped (pip install torch to compare).")
    return notes


def _fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


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
        for side, conv, prefix in (("paddle", "paddle", ""), ("fast_conv", "fast_conv (default)", "fast_conv_")):
            ratio = r[RATIO_KEYS[side]]
            cells = [r["model"], "x".join(map(str, r["input"])), str(r["batch"]), conv,
                     f"{r[side + '_images_per_s']:,.1f}", _fmt(r["torch_images_per_s"], ",.1f"),
                     _fmt(ratio, ".2f") + ("x" if ratio else ""), f"{r[side + '_gflops']:.1f}",
                     f"{100 * r[prefix + 'sgemm_fraction']:.1f}%"]
            if epoch:
                cells += ([_fmt(r.get("epoch_images_per_s"), ",.1f"), _fmt(r.get("epoch_vs_bench"), ".2f")]
                          if side == "fast_conv" else ["", ""])
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
        f"conv kernel (runtime.fast_conv false), fast_conv = what train runs by default",
        f"other load before: {_fmt(result['busy_cores_before'], '.2f')} cores busy; load average (1/5/15 min) "
        f"before {_loads(result['load_average_before'])}, "
        f"after {_loads(result['load_average_after'])}; {result['steps']} steps x {result['repeats']} repeats, "
        f"median, {result['warmup_steps']} warm-up steps excluded",
    ]
    notes = result["notes"] + [f"{r['model']}: {r['torch_note']}" for r in result["rows"] if r["torch_note"]]
    return "\n".join(lines + [f"note: {n}" for n in notes])


def _loads(values) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def run_bench_cli(args) -> int:
    """`paddle-cnn bench` with the parsed arguments: print the table, write --json if asked.

    Args:
        args: argparse namespace (models, batch, steps, repeats, json, no_torch, ops, conv, epoch,
            inference, batches).
    Returns:
        Exit code 0.
    """
    if args.ops:
        rows = bench_ops.run_ops_bench()
        print(bench_ops.format_ops_table(rows))
        result = {"ops": rows, "command": runtime.COMMAND}
    elif args.conv:
        rows = bench_ops.run_conv_bench(batch=args.batch)
        print(bench_ops.format_conv_table(rows))
        result = {"conv": rows, "batch": args.batch, "command": runtime.COMMAND, **environment(
            int(os.environ.get("OMP_NUM_THREADS") or 1))}
    elif args.inference:
        from .bench_inference import format_inference_table, parse_batches, run_inference_bench

        result = run_inference_bench(parse_models(args.models), parse_batches(args.batches), args.steps,
                                     args.repeats, with_torch=not args.no_torch)
        print(format_inference_table(result))
    else:
        specs = parse_models(args.models)
        result = run_bench(specs, args.batch, args.steps, args.repeats, with_torch=not args.no_torch,
                           epoch=args.epoch)
        print(format_table(result))
    if args.json:
        from .fileio import write_json

        write_json(Path(args.json), result)
        print(f"written to {args.json}")
    return 0
