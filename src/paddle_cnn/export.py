"""`paddle-cnn export`: a run's checkpoint as a Paddle inference model, checked against the eager model.

The folder written (RUN_DIR/inference by default) holds:
- model.json + model.pdiparams: paddle.jit.save of the network in eval mode (Paddle 3 writes the
  program as PIR JSON, not the older .pdmodel), loadable by paddle.inference and paddle.jit.load;
- preprocess.json: what an image file must go through to become the model's input, written from
  predict.file_preprocessing, i.e. from the same data.preprocess_spec the training data went through;
- export_report.json: the parity check and the SHA-256 of the model files;
- with --onnx, model.onnx: paddle2onnx's conversion of model.json, checked with onnxruntime too.

The exported graph is built with runtime.fast_conv off (paddle's own Conv2D), whatever the run
used: fast_conv is a training-speed rewrite and falls back to that conv under to_static anyway;
building without it makes the exported program independent of it. The parity check then compares
the predictor with the network exactly as the run evaluated it (fast_conv included).

Everything is written to a temporary folder beside the target and moved into place only after the
parity check passed (fileio.replace_dir), so a failed export leaves what was there untouched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import paddle

from . import fileio, runlog
from .config import to_dict
from .data import data_root, load_raw_splits, preprocess, with_recorded_root
from .errors import ExportError
from .evaluate import load_network, output_names
from .inference import (
    EXPORT_FILES,
    MODEL_FILE,
    PARAMS_FILE,
    PREFIX,
    PREPROCESS_FILE,
    REPORT_FILE,
    file_digest,
    make_predictor,
    run_predictor,
)
from .network import build_network
from .predict import file_preprocessing

PARITY_IMAGES = 64  # first test images checked on every export
ONNX_FILE, ONNX_OPSET = f"{PREFIX}.onnx", 13
UNIT_ROUNDOFF = 2.0 ** -24  # float32


def default_output(run_dir: Path) -> Path:
    """Where `paddle-cnn export RUN_DIR` writes when --output is not given.

    Args:
        run_dir: the run directory.
    Returns:
        RUN_DIR/inference.
    """
    return Path(run_dir) / "inference"


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse a target that holds something export must not replace.

    Args:
        target: the export folder to write.
        overwrite: the user passed --overwrite.
    """
    fileio.check_output_dir(target, "export", "--output")  # e.g. a path under a regular file
    if not target.exists():
        return
    if not any(target.iterdir()):
        return
    if not any((target / name).exists() for name in EXPORT_FILES):
        raise ExportError(f"{target} is a folder that does not hold an export; export never replaces other "
                          f"files, even with --overwrite. Choose another --output.")
    if not overwrite:
        raise ExportError(f"{target} already holds an export. Pass --overwrite to replace it (atomically: "
                          f"the old one stays until the new one passed its parity check), or choose another --output.")


def plain_network(cfg, eager):
    """The run's network without training-only rewrites (fast_conv off), with the eager weights, in eval mode.

    Args:
        cfg: the run config.
        eager: the network as the run built it, with the weights to export.
    Returns:
        A separate network instance.
    """
    net = build_network(dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, fast_conv=False)))
    net.set_state_dict(eager.state_dict())
    net.eval()
    return net


def save_inference_model(net, folder: Path, shape: tuple[int, int, int]) -> None:
    """paddle.jit.save the network with a batch-size-free float32 NCHW input named "image".

    Args:
        net: the network in eval mode. folder: where model.json + model.pdiparams go. shape: (C, H, W).
    """
    spec = [paddle.static.InputSpec([None, *shape], "float32", "image")]
    try:
        paddle.jit.save(net, str(folder / PREFIX), input_spec=spec)
    except Exception as exc:  # to_static raises many types for code it cannot convert
        raise ExportError(f"paddle.jit.save could not export {type(net).__name__} ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                          f"nothing was written.") from None
    if not (folder / MODEL_FILE).is_file():
        raise ExportError(f"paddle.jit.save wrote no {MODEL_FILE} in {folder} (this Paddle writes "
                          f"{', '.join(os.listdir(folder))}); this project needs Paddle 3's JSON format.")


def preprocess_record(cfg, shape: tuple[int, int, int], root: Path | None = None) -> dict:
    """The content of preprocess.json: input, preprocessing, classes, outputs, dataset.

    Args:
        cfg: the run config. shape: (C, H, W) of the model input.
        root: the data root the export read (recorded absolute, for `--model` without $PADDLE_CNN_DATA).
    Returns:
        JSON-ready dict; read_mode, size, channels, mean, std are predict.prepare_pixels' arguments.
    """
    from .data import CHANNEL_RULE, RESIZE_RULE

    names = output_names(cfg)
    return {
        **file_preprocessing(cfg),
        "resize": RESIZE_RULE,
        "channel_conversion": CHANNEL_RULE,
        "normalize": "(pixel - mean) / std per channel; pixels in 0-255, mean and std in those units",
        "transparency": "transparent pixels are laid on white before conversion",
        "input": {"name": "image", "shape": [None, *shape], "dtype": "float32", "layout": "NCHW"},
        "classes": names,
        "output": {"shape": [None, len(names)], "meaning": "logits: unnormalised class scores (no softmax "
                   "in the graph); softmax gives probabilities, argmax the class, index i is classes[i]"},
        "dataset": {"data": to_dict(cfg.data), "seed": cfg.train.seed,
                    "data_root": str(root.expanduser().resolve()) if root else None},
        "model": {"name": cfg.model.name, "options": cfg.model.options()},
    }


def parity_tolerance(net, logits: np.ndarray) -> tuple[float, str]:
    """The largest |predictor - eager| difference float32 rounding alone can explain.

    A dot product of length K summed in any order (other SIMD widths such as AVX-512, oneDNN's
    blocked kernels, fused conv+BN) is within K*u of the exact value relative to its magnitude
    (u = 2^-24, the worst-case bound, not the typical sqrt(K)*u); errors of successive layers add.
    So the bound is layers x max K x u, relative to the logits' scale (at least 1). A real export
    fault (dropout or batch statistics left on, other weights, another graph) moves logits by a
    sizeable part of that scale, far above it.

    Args:
        net: the network (its weight tensors give the layers and dot-product lengths).
        logits: the eager logits of the parity batch.
    Returns:
        (tolerance, the rule in words with its numbers).
    """
    lengths = [int(np.prod(p.shape[1:])) if len(p.shape) == 4 else int(p.shape[0])
               for name, p in net.named_parameters() if name.endswith("weight") and len(p.shape) in (2, 4)]
    scale = max(1.0, float(np.abs(logits).max()))
    tol = len(lengths) * max(lengths) * UNIT_ROUNDOFF * scale
    return tol, (f"{len(lengths)} weight layers x max dot-product length {max(lengths)} x float32 unit roundoff "
                 f"2^-24 x logit scale {scale:.3g} (worst-case rounding bound, independent of summation order)")


def parity_batch(cfg, data=None) -> tuple[np.ndarray, np.ndarray, bool]:
    """The first PARITY_IMAGES test images, preprocessed from preprocess.json's spec.

    Args:
        cfg: the run config.
        data: the data section to read them with (default cfg.data; export_run's has the recorded root).
    Returns:
        (images (N, C, H, W), labels (N,), whether the spec reproduced data.preprocess bit for bit).
    """
    raw = load_raw_splits(data or cfg.data, cfg.train.seed, ("test",))["test"]
    pixels, labels = raw.images[:PARITY_IMAGES], raw.labels[:PARITY_IMAGES]
    s = file_preprocessing(cfg)
    from .data import apply_preprocess

    x = apply_preprocess(pixels, s["size"], s["channels"], s["mean"], s["std"])
    return x, labels, bool(np.array_equal(x, preprocess(pixels, cfg.data, cfg.model.in_channels)))


def compare(eager_logits: np.ndarray, predicted: np.ndarray, tol: float) -> dict:
    """Predictor outputs against the eager ones.

    Classes must be identical except where the eager top two are within 2 x tol of each other
    (a tie at float32 precision, which either side may break its own way); those are counted.

    Args:
        eager_logits: (N, K). predicted: (N, K). tol: from parity_tolerance.
    Returns:
        {"max_abs_diff", "classes_identical", "ties", "mismatched", "passed"}.
    """
    diff = float(np.abs(predicted - eager_logits).max()) if np.isfinite(predicted).all() else float("inf")
    top2 = np.sort(eager_logits, axis=1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) <= 2 * tol
    differs = eager_logits.argmax(axis=1) != predicted.argmax(axis=1)
    mismatched = int(np.sum(differs & ~tie))
    return {"max_abs_diff": diff, "classes_identical": not differs.any(), "ties": int(np.sum(tie & differs)),
            "mismatched": mismatched, "passed": diff <= tol and mismatched == 0}


def onnx_modules():
    """paddle2onnx and onnxruntime, or an ExportError saying how to install them (the `onnx` extra)."""
    try:
        import onnxruntime
        import paddle2onnx
    except ImportError as exc:
        raise ExportError(f"--onnx needs paddle2onnx and onnxruntime ({exc}); install them with "
                          f"`pip install -e \".[onnx]\"`, or export without --onnx.") from None
    return paddle2onnx, onnxruntime


def onnx_check(folder: Path, images: np.ndarray, expected: np.ndarray, tol: float) -> dict:
    """Convert model.json to model.onnx with paddle2onnx; compare onnxruntime's outputs with eager.

    Args:
        folder: the export folder. images: the parity batch. expected: eager logits. tol: the tolerance.
    Returns:
        One parity check (see compare), with the runtime's name.
    """
    paddle2onnx, ort = onnx_modules()
    try:
        paddle2onnx.export(str(folder / MODEL_FILE), str(folder / PARAMS_FILE), str(folder / ONNX_FILE),
                           opset_version=ONNX_OPSET)
        session = ort.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: images})[0]
    except Exception as exc:  # the converter and the runtime raise many types; all mean "cannot convert"
        raise ExportError(f"paddle2onnx {paddle2onnx.__version__} could not convert or onnxruntime could not run "
                          f"the model ({type(exc).__name__}: {str(exc).strip()[:300]}); nothing was written. "
                          f"Export without --onnx.") from None
    return {"runtime": f"onnxruntime {ort.__version__} (opset {ONNX_OPSET})", "device": "cpu", "onednn": False,
            **compare(expected, got, tol)}


def parity_report(eager, folder: Path, images: np.ndarray, onnx: bool = False) -> dict:
    """Run the exported model with and without oneDNN (and as ONNX) on the parity batch; compare with eager.

    Args:
        eager: the network as the run evaluates it. folder: the (temporary) export folder.
        images: the parity batch. onnx: also convert to ONNX and check onnxruntime.
    Returns:
        {"tolerance", "tolerance_rule", "images", "checks": [per runtime]}; on a GPU only GPU is checked.
    """
    eager.eval()
    with paddle.no_grad():
        expected = eager(paddle.to_tensor(images)).numpy()
    tol, rule = parity_tolerance(eager, expected)
    on_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    checks = []
    for onednn in ((False,) if on_gpu else (True, False)):
        got = run_predictor(make_predictor(folder, onednn), images)
        checks.append({"runtime": "paddle.inference", "device": "gpu" if on_gpu else "cpu", "onednn": onednn,
                       **compare(expected, got, tol)})
    if onnx:
        checks.append(onnx_check(folder, images, expected, tol))
    return {"tolerance": tol, "tolerance_rule": rule, "images": len(images), "checks": checks}


def export_run(run_dir: Path, output: Path | None = None, checkpoint: str = "best", overwrite: bool = False,
               onnx: bool = False, log=print) -> dict:
    """Export a run's checkpoint to an inference-model folder, after a parity check.

    Args:
        run_dir: the run directory. output: the export folder (default RUN_DIR/inference).
        checkpoint: "best" or "last". overwrite: replace an existing export.
        onnx: also write model.onnx (paddle2onnx), checked with onnxruntime. log: where progress lines go.
    Returns:
        The export report (also written to export_report.json).
    """
    run_dir = Path(run_dir)
    target = Path(output) if output else default_output(run_dir)
    check_target(target, overwrite)
    if onnx:
        onnx_modules()  # before any work: fail at once when the extra is not installed
    cfg, eager = load_network(run_dir, checkpoint)
    data = with_recorded_root(cfg.data, runlog.recorded_data_root(run_dir))
    images, labels, same_preprocessing = parity_batch(cfg, data)
    fileio.remove_dead_temp_dirs(target)
    tmp = fileio.temp_sibling(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_inference_model(plain_network(cfg, eager), tmp, tuple(images.shape[1:]))
        fileio.write_json(tmp / PREPROCESS_FILE, preprocess_record(cfg, tuple(images.shape[1:]), data_root(data)))
        parity = parity_report(eager, tmp, images, onnx)
        report = _report(run_dir, checkpoint, cfg, tmp, parity, same_preprocessing)
        _check_parity(report, target)
        fileio.write_json(tmp / REPORT_FILE, report)
        check_target(target, overwrite)  # again: another process may have written it meanwhile
        fileio.replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(_summary(report, target))
    return report


def _report(run_dir: Path, checkpoint: str, cfg, folder: Path, parity: dict, same_preprocessing: bool) -> dict:
    """export_report.json's content."""
    plain = next(c for c in parity["checks"] if c["runtime"] == "paddle.inference" and not c["onednn"])
    onednn = [c for c in parity["checks"] if c["onednn"]]
    onnx = [c for c in parity["checks"] if c["runtime"].startswith("onnxruntime")]
    return {"run_dir": str(run_dir.resolve()), "checkpoint": checkpoint, "model": cfg.model.name,
            "dataset": cfg.data.name, "paddle": paddle.__version__,
            "exported_graph": "paddle's own layers, runtime.fast_conv off; run trained with fast_conv "
                              f"{'on' if cfg.runtime.fast_conv else 'off'} (the eager side of the check)",
            "parity": {**parity, "split": "test", "preprocessing_identical": same_preprocessing},
            "onednn_parity": all(c["passed"] for c in onednn) if onednn else None,
            "passed": plain["passed"] and same_preprocessing and all(c["passed"] for c in onnx),
            "files": {name: file_digest(folder / name) for name in (MODEL_FILE, PARAMS_FILE, ONNX_FILE)
                      if (folder / name).is_file()}}


def _check_parity(report: dict, target: Path) -> None:
    """Raise ExportError when the exported model does not reproduce the eager one (without oneDNN)."""
    parity = report["parity"]
    if not parity["preprocessing_identical"]:
        raise ExportError(f"export to {target} failed: preprocess.json's preprocessing does not reproduce "
                          f"data.preprocess on the test images; nothing was written. This is a bug: please report it.")
    if not report["passed"]:
        c = next(c for c in parity["checks"] if not c["onednn"] and not c["passed"])
        raise ExportError(f"export to {target} failed its parity check: on {parity['images']} test images the "
                          f"{c['runtime']} model differs from the eager model by up to {c['max_abs_diff']:.3g} "
                          f"(tolerance {parity['tolerance']:.3g}) and predicts another class for {c['mismatched']} "
                          f"of them; nothing was written. The model does not export faithfully: please report it "
                          f"with the model name ({report['model']}).")


def _summary(report: dict, target: Path) -> str:
    """The lines `paddle-cnn export` prints."""
    parity = report["parity"]
    lines = [f"exported {report['model']} ({report['checkpoint']} checkpoint) to {target}"]
    for c in parity["checks"]:
        where = c["runtime"] if c["runtime"] != "paddle.inference" else f"oneDNN {'on' if c['onednn'] else 'off'}"
        lines.append(f"parity on {parity['images']} test images, {c['device']} {where}: "
                     f"max |diff| {c['max_abs_diff']:.3g} (tolerance {parity['tolerance']:.3g}), classes "
                     f"{'identical' if c['classes_identical'] else 'differ'}: {'passed' if c['passed'] else 'FAILED'}")
    if report["onednn_parity"] is False:
        lines.append("note: the oneDNN predictor gives wrong outputs for this model; `predict --model` and "
                     "`evaluate --model` will run it without oneDNN.")
    return "\n".join(lines)
