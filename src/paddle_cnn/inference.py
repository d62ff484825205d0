"""Predictions through paddle.inference from an export folder alone (`--model DIR`).

An export folder (written by `paddle-cnn export`, see export.py) holds model.json + model.pdiparams
(paddle.jit.save's format in Paddle 3), preprocess.json and export_report.json. Nothing here reads
a run's config or checkpoint or builds a network: image files are preprocessed from preprocess.json
by the functions that preprocessed the training data (predict.prepare_pixels, data.apply_preprocess),
and the model runs in a paddle.inference predictor.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from . import rundir
from .data import BatchLoader, Split, apply_preprocess, load_raw_splits, to_pixels, with_recorded_root
from .errors import ModelDirError
from .evaluate import confusion_report
from .predict import MAX_GRID, check_count, prepare_pixels, print_top3, sample_count, show_samples

PREFIX = "model"  # paddle.jit.save path prefix: model.json + model.pdiparams
MODEL_FILE, PARAMS_FILE = f"{PREFIX}.json", f"{PREFIX}.pdiparams"
PREPROCESS_FILE, REPORT_FILE = "preprocess.json", "export_report.json"
EXPORT_FILES = (MODEL_FILE, PARAMS_FILE, PREPROCESS_FILE, REPORT_FILE)
PREPROCESS_KEYS = ("read_mode", "size", "channels", "mean", "std", "classes", "input", "output", "dataset")
BATCH = 256  # images per predictor call when evaluating a split


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks.

    Args:
        path: the file.
    Returns:
        Hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> dict:
    """A JSON object from an export folder; a missing or unreadable file is a ModelDirError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelDirError(f"{path.parent} is not a complete inference-model folder: {path.name} is missing. "
                            f"Give the folder `paddle-cnn export` wrote, or export the run again.") from None
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"{path} is not readable JSON ({exc}); the export is corrupt. "
                            f"Export the run again with `paddle-cnn export RUN_DIR --overwrite`.") from None
    if not isinstance(data, dict):
        raise ModelDirError(f"{path} does not hold a JSON object; the export is corrupt. Export the run again.")
    return data


def read_export(folder: Path) -> tuple[dict, dict]:
    """Check an export folder and read its preprocess.json and export_report.json.

    Every file must be present, and the model files must have the SHA-256 the export recorded,
    so a truncated, replaced or mixed-up model is refused before paddle.inference sees it.

    Args:
        folder: the export folder.
    Returns:
        (preprocess spec, export report).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelDirError(f"--model {folder}: no such folder; give the folder `paddle-cnn export` wrote "
                            f"(RUN_DIR/inference by default).")
    missing = [name for name in EXPORT_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelDirError(f"{folder} is not a complete inference-model folder: {', '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} missing (an export has "
                            f"{', '.join(EXPORT_FILES)}). Export the run again with `paddle-cnn export RUN_DIR`.")
    spec, report = _read_json(folder / PREPROCESS_FILE), _read_json(folder / REPORT_FILE)
    absent = [key for key in PREPROCESS_KEYS if key not in spec]
    if absent:
        raise ModelDirError(f"{folder / PREPROCESS_FILE} lacks {', '.join(absent)}; it was not written by "
                            f"`paddle-cnn export` or is damaged. Export the run again.")
    for name, digest in report.get("files", {}).items():
        if file_digest(folder / name) != digest:
            raise ModelDirError(f"{folder / name} is not the file that was exported and checked (its SHA-256 "
                                f"differs from {REPORT_FILE}'s): it is truncated, corrupt or from another export. "
                                f"Export the run again with `paddle-cnn export RUN_DIR --overwrite`.")
    return spec, report


def make_predictor(folder: Path, onednn: bool):
    """A paddle.inference predictor for an export folder's model.json + model.pdiparams.

    Args:
        folder: the folder.
        onednn: use oneDNN kernels on CPU (Config.enable_onednn); GPU is used when paddle has one.
    Returns:
        The predictor. Unreadable model files raise ModelDirError.
    """
    import paddle
    import paddle.inference as pi

    folder = Path(folder)
    config = pi.Config(str(folder / MODEL_FILE), str(folder / PARAMS_FILE))
    config.disable_glog_info()
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        config.enable_use_gpu(256, 0)
    else:
        config.disable_gpu()
        # The thread count runtime.setup chose for the whole process (all cores unless told otherwise).
        config.set_cpu_math_library_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
        config.enable_onednn() if onednn else config.disable_onednn()
    try:
        return pi.create_predictor(config)
    except (RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelDirError(f"paddle.inference cannot load the model in {folder} ({first}); "
                            f"{MODEL_FILE} or {PARAMS_FILE} is corrupt. Export the run again.") from None


def run_predictor(predictor, images: np.ndarray) -> np.ndarray:
    """One forward pass of a predictor.

    Args:
        predictor: from make_predictor.
        images: (N, C, H, W) float32 model input.
    Returns:
        (N, K) float32 outputs.
    """
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(images.shape))
    handle.copy_from_cpu(np.ascontiguousarray(images, dtype=np.float32))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


class InferenceModel:
    """An export folder loaded for prediction; quacks like paddle.Model for predict.confusion_report."""

    def __init__(self, folder: Path, onednn: bool = True, log=print):
        """Check and load an export folder (read_export, make_predictor); log gets the oneDNN note."""
        self.folder = Path(folder)
        self.spec, self.report = read_export(self.folder)
        self.onednn = onednn
        if onednn and not self.report.get("onednn_parity", True):
            # export found this model's oneDNN predictor wrong (export_report.json): never use it.
            log(f"note: oneDNN is off for this model: its oneDNN predictor failed the export's parity check "
                f"(see {self.folder / REPORT_FILE}).")
            self.onednn = False
        self.predictor = make_predictor(self.folder, self.onednn)

    def logits(self, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
        """Outputs (logits) for a preprocessed batch, BATCH images per predictor call.

        Args:
            images: (N, C, H, W) float32 as preprocess.json describes.
            batch: images per call.
        Returns:
            (N, K) float32 logits.
        """
        return np.concatenate([run_predictor(self.predictor, images[i:i + batch])
                               for i in range(0, len(images), batch)])

    def predict_batch(self, inputs: list) -> list:
        """paddle.Model.predict_batch's form, so predict.predict_logits takes this model too."""
        return [self.logits(np.asarray(inputs[0]))]

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Raw (N, H, W, C) pixels to model input, as preprocess.json says."""
        s = self.spec
        return apply_preprocess(images, s["size"], s["channels"], s["mean"], s["std"])

    def split(self, name: str) -> Split:
        """A split of the dataset the model was trained on, preprocessed from preprocess.json.

        The data is found where the export found it, if nothing else names a root (exports before
        that record: data.root, $PADDLE_CNN_DATA, Paddle's cache).
        """
        from .config import DataConfig, from_dict

        dataset = self.spec["dataset"]
        data = with_recorded_root(from_dict(DataConfig, dataset["data"], "data."), dataset.get("data_root"))
        raw = load_raw_splits(data, self.spec["dataset"]["seed"], (name,))[name]
        return Split(self.preprocess(raw.images), raw.labels)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy, in float64 (the loss `evaluate RUN_DIR` reports).

    Args:
        logits: (N, K). labels: (N,).
    Returns:
        The mean loss.
    """
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def evaluate_model(folder: Path, split: str = "test", onednn: bool = True) -> dict:
    """Loss, accuracy and confusion matrix of an export on a split of its dataset.

    Args:
        folder: the export folder. split: "test" or "dev". onednn: see make_predictor.
    Returns:
        {"split", "loss", "acc", "samples", "per_class_acc", "confusion_matrix", "onednn"}; also writes
        confusion_matrix.png (confusion_matrix_dev.png for dev) into the folder.
    """
    model = InferenceModel(folder, onednn)
    data = model.split(split)
    loss = cross_entropy(model.logits(data.images), data.labels)
    png = model.folder / ("confusion_matrix.png" if split == "test" else f"confusion_matrix_{split}.png")
    confusion = confusion_report(model, BatchLoader(data, BATCH), model.spec["classes"], png,
                                 title=f"{model.folder.resolve().name} (paddle.inference) {split}")
    return {"split": split, "loss": loss, "acc": confusion["acc"], "samples": confusion["samples"],
            "per_class_acc": confusion["per_class_acc"], "confusion_matrix": confusion["confusion_matrix"],
            "onednn": model.onednn}


def predict_model(folder: Path, images: list[str] | None, split: str, count: int, onednn: bool = True) -> int:
    """`paddle-cnn predict --model`: top-3 for image files, or a split's first samples as a grid.

    Args:
        folder: the export folder. images: image files, or None for dataset samples.
        split: "test" or "dev". count: samples to show. onednn: see make_predictor.
    Returns:
        Exit code 0.
    """
    if not images:
        check_count(count)
    model = InferenceModel(folder, onednn)
    spec = model.spec
    if images:
        prepared = [(Path(p), *prepare_pixels(Path(p), spec)) for p in images]  # all checked before output
        print_top3(prepared, model.logits(np.concatenate([x for _, _, x in prepared])), spec["classes"],
                   spec["dataset"]["data"]["name"])
        return 0
    data = model.split(split)
    count = sample_count(count, len(data.labels), split)
    x = data.images[:count]
    show_samples(data.labels[:count], model.logits(x), spec["classes"],
                 to_pixels(x[:MAX_GRID], spec["mean"], spec["std"]), model.folder / rundir.PREDICTIONS,
                 f"{model.folder.resolve().name} (paddle.inference) on {spec['dataset']['data']['name']} {split}",
                 split)
    return 0
