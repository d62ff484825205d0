"""`paddle-cnn bench --inference`: images/s of the ways to run a trained model forward on a CPU.

Sides, all on the same fixed random batch, in one process, with the same thread count:
- eager: the network as `paddle-cnn evaluate RUN_DIR` runs it (network.build_network, fast_conv on,
  eval mode, paddle.no_grad);
- predictor: the model exported as `paddle-cnn export` does it (export.save_inference_model),
  run by paddle.inference without oneDNN;
- onednn: the same predictor with Config.enable_onednn() (what `--model` uses by default on CPU);
- torch: the PyTorch twin in eval mode under no_grad, when torch is installed (optional).
Repetitions alternate between sides and the median is reported, as in training.py. Batch 1 gets
32x the calls per repetition so that its timing is not one call long.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import paddle

from .. import network, runtime
from ..errors import ConfigError
from . import common, torch_twins

SIDES = ("eager", "predictor", "onednn", "torch")
SMALL_BATCH_CALLS = 32  # batch 1 (and other small batches) time this many times more calls


def parse_batches(text: str) -> list[int]:
    """Parse --batches ("1,128").

    Args:
        text: comma-separated positive integers.
    Returns:
        The batch sizes. Raises ConfigError for anything else.
    """
    try:
        batches = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise ConfigError(f"--batches {text!r}: give comma-separated batch sizes of at least 1, e.g. 1,128.")
    return batches


def inference_sides(spec: common.BenchSpec, batch: int, folder: Path, threads: int, with_torch: bool) -> tuple:
    """Build every side's forward step for one model and batch size.

    Args:
        spec: the model. batch: images per call. folder: where the model is exported.
        threads: PyTorch threads (paddle's OMP_NUM_THREADS). with_torch: add the PyTorch side if it has a twin.
    Returns:
        ({side: step()}, {side: max |outputs - eager outputs|} for the predictors).
    """
    from ..export import plain_network, save_inference_model
    from ..inference import make_predictor, run_predictor

    cfg = common.bench_config(spec, batch, fast_conv=True)
    net = network.build_network(cfg)
    net.eval()
    x = common.random_batch(spec.shape, batch)[0]
    save_inference_model(plain_network(cfg, net), folder, spec.shape)

    def eager():
        with paddle.no_grad():
            return net(paddle.to_tensor(x)).numpy()

    predictors = {"predictor": make_predictor(folder, False), "onednn": make_predictor(folder, True)}
    sides = {"eager": eager, **{side: (lambda p=p: run_predictor(p, x)) for side, p in predictors.items()}}
    expected = eager()
    diffs = {side: float(np.abs(run_predictor(p, x) - expected).max()) for side, p in predictors.items()}
    if with_torch and spec.name in torch_twins.TORCH_MODELS:
        sides["torch"] = torch_twins.torch_eval_step(spec.name, spec.shape, batch, threads, spec.stem)
    return sides, diffs


def bench_inference_model(spec: common.BenchSpec, batch: int, steps: int, repeats: int, threads: int,
                          with_torch: bool) -> dict:
    """Images/s of every side for one model at one batch size.

    Args:
        spec: the model. batch: images per call. steps: timed calls per repetition (x SMALL_BATCH_CALLS
            below batch 32). repeats: repetitions. threads: see inference_sides. with_torch: time PyTorch too.
    Returns:
        One result row (JSON-ready).
    """
    calls = steps * (SMALL_BATCH_CALLS if batch < 32 else 1)
    with tempfile.TemporaryDirectory(prefix="paddle-cnn-bench-") as tmp:
        sides, diffs = inference_sides(spec, batch, Path(tmp), threads, with_torch)
        rates = common.time_sides(sides, batch, calls, repeats)
    row = {"model": spec.label, "name": spec.name, "stem": spec.stem, "input": list(spec.shape), "batch": batch,
           "calls_per_repeat": calls, "max_abs_diff": diffs,
           "torch_note": None if "torch" in sides or not with_torch else f"no PyTorch twin of {spec.name}"}
    for side in SIDES:
        rate = statistics.median(rates[side]) if side in rates else None
        row[f"{side}_repeats"] = rates.get(side)
        row[f"{side}_images_per_s"] = rate
        row[f"{side}_ms_per_batch"] = 1000 * batch / rate if rate else None
    row["onednn_vs_eager"] = row["onednn_images_per_s"] / row["eager_images_per_s"]
    row["onednn_vs_torch"] = (row["onednn_images_per_s"] / row["torch_images_per_s"]
                              if row["torch_images_per_s"] else None)
    return row


def run_inference_bench(specs: list, batches: list[int], steps: int, repeats: int, with_torch: bool = True,
                        log=print) -> dict:
    """Bench every model at every batch size.

    Args:
        specs: models (common.parse_models). batches: batch sizes. steps, repeats: see bench_inference_model.
        with_torch: include PyTorch when it is installed.
        log: progress lines.
    Returns:
        The full result (JSON-ready): environment, load, notes, rows.
    """
    if min(steps, repeats) < 1:
        raise ConfigError(f"--steps and --repeats must be at least 1 (got {steps}, {repeats}).")
    runtime.select_device("cpu")
    threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
    result = {"command": runtime.COMMAND, "kind": "inference", "batches": batches, "steps": steps,
              "repeats": repeats, "warmup_steps": common.WARMUP_STEPS, **common.environment(threads),
              "load_average_before": os.getloadavg(), "busy_cores_before": common.busy_cores()}
    torch_ok = with_torch and torch_twins.torch_available()
    result["notes"] = common.notes(result["busy_cores_before"], with_torch, torch_ok)
    if torch_ok:
        result["versions"]["torch"] = torch_twins.torch_info()["version"]
    rows = []
    for spec in specs:
        for batch in batches:
            log(f"bench --inference {spec.label} {spec.shape} batch {batch} ...")
            rows.append(bench_inference_model(spec, batch, steps, repeats, threads, torch_ok))
    result["load_average_after"] = os.getloadavg()
    result["rows"] = rows
    return result


def format_inference_table(result: dict) -> str:
    """The inference bench as a Markdown table plus the settings it was measured under.

    Args:
        result: run_inference_bench output.
    Returns:
        Text for the terminal.
    """
    head = ["model", "input", "batch", "eager img/s", "predictor img/s", "oneDNN img/s", "torch img/s",
            "oneDNN/eager", "oneDNN/torch", "oneDNN ms/batch", "max |diff| (pred / oneDNN)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    fmt = common.fmt
    for r in result["rows"]:
        d = r["max_abs_diff"]
        lines.append("| " + " | ".join([
            r["model"], "x".join(map(str, r["input"])), str(r["batch"]), f"{r['eager_images_per_s']:,.0f}",
            f"{r['predictor_images_per_s']:,.0f}", f"{r['onednn_images_per_s']:,.0f}",
            fmt(r["torch_images_per_s"], ",.0f"), f"{r['onednn_vs_eager']:.2f}x",
            fmt(r["onednn_vs_torch"], ".2f") + ("x" if r["onednn_vs_torch"] else ""),
            f"{r['onednn_ms_per_batch']:.2f}", f"{d['predictor']:.1e} / {d['onednn']:.1e}"]) + " |")
    cpu = result["cpu"]
    lines += ["", f"threads: OMP_NUM_THREADS={result['omp_num_threads']} ({result['threads_source']}), the "
              f"predictors' set_cpu_math_library_num_threads too; CPU: {cpu['vendor']} {cpu['model']}, "
              f"{cpu['cores']} usable cores; paddle {result['versions']['paddle']}",
              f"eager = `evaluate RUN_DIR`'s forward (no_grad, fast_conv on); predictor = paddle.inference "
              f"without oneDNN; oneDNN = with Config.enable_onednn() (`--model`'s default); median of "
              f"{result['repeats']} repeats; other load before: {fmt(result['busy_cores_before'], '.2f')} cores busy"]
    notes = result["notes"] + [f"{r['model']}: {r['torch_note']}" for r in result["rows"] if r["torch_note"]]
    return "\n".join(lines + [f"note: {n}" for n in dict.fromkeys(notes)])
