"""`paddle-cnn export`, `evaluate --model`, `predict --model`: round trip for every registered model,
the parity report, equality with the checkpoint-based commands, and every bad input the issue lists."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from paddle_cnn.cli import main
from paddle_cnn.registry import get_factory, model_names

from conftest import run_cli, tiny_config

TOP3 = re.compile(r"(\d)\. (\S+) p=([\d.]+)")


def _train(tmp_path_factory, data_root, name: str, **sections) -> Path:
    """Train a tiny one-epoch run through the CLI; returns its run directory."""
    tmp = tmp_path_factory.mktemp(name)
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data_root, **sections)))
    run_dir = tmp / "run"
    assert main(["train", str(config), "--output-dir", str(run_dir), "-o", "train.epochs=1"]) == 0
    return run_dir


def _sections(name: str) -> dict:
    """Tiny data for a registry model: grey MNIST (32x32 unless it is lenet) or colour CIFAR-10."""
    channels = inspect.signature(get_factory(name)).parameters["in_channels"].default
    train = {"batch_size": 32, "eval_batch_size": 64}
    if channels == 1:
        data = {"name": "mnist", "train_size": 32, "dev_size": 32, "test_size": 64,
                **({} if name == "lenet" else {"resize": 32})}
    else:
        data = {"name": "cifar10", "train_size": 32, "dev_size": 32, "dev_split": "tail", "test_size": 64}
    return {"data": data, "model": {"name": name, "in_channels": channels}, "train": train}


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, data_root):
    """One tiny LeNet run shared by the tests below, exported once to RUN_DIR/inference."""
    run_dir = _train(tmp_path_factory, data_root, "lenet_export")
    assert main(["export", str(run_dir)]) == 0
    return run_dir


def _report(folder: Path) -> dict:
    return json.loads((folder / "export_report.json").read_text())


def _set_fast_conv(run_dir: Path, dest: Path, on: bool) -> Path:
    """A copy of a run whose config has runtime.fast_conv set as asked (same weights)."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("inference"))
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["runtime"]["fast_conv"] = on
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dest


def _eager_logits(net, images: np.ndarray) -> np.ndarray:
    import paddle

    net.eval()
    with paddle.no_grad():
        return net(paddle.to_tensor(images)).numpy()


@pytest.mark.parametrize("name", model_names())
def test_round_trip_every_model_fast_conv_on_and_off(name, tmp_path_factory, data_root):
    """Export once (the graph never contains fast_conv), then match the eager model with fast_conv on and off."""
    import paddle

    from paddle_cnn import fast_conv
    from paddle_cnn.evaluate import load_network
    from paddle_cnn.export import parity_batch
    from paddle_cnn.inference import InferenceModel
    from paddle_cnn.registry import build_model

    run_dir = _train(tmp_path_factory, data_root, name, **_sections(name))
    assert main(["export", str(run_dir)]) == 0
    folder = run_dir / "inference"
    report = _report(folder)
    assert report["passed"] and report["parity"]["preprocessing_identical"]
    # fast_conv's batch GEMM (unfold + matmul) must not be what was exported: only paddle's conv2d.
    assert '"1.unfold"' not in (folder / "model.json").read_text()
    cfg, with_fast_conv = load_network(run_dir)  # the network as the run evaluated it (fast_conv on)
    assert cfg.runtime.fast_conv and not any(type(m) is paddle.nn.Conv2D and fast_conv.supported(m)
                                             for m in with_fast_conv.sublayers())  # all switched
    without = build_model(cfg.model.name, **cfg.model.options())  # paddle's own conv, built independently
    without.set_state_dict(paddle.load(str(run_dir / "checkpoints" / "best.pdparams")))
    images = parity_batch(cfg)[0][:16]  # the export checked 64; 16 keep this test quick
    model = InferenceModel(folder, onednn=False)  # the oneDNN predictor's outputs are in the report already
    if report["onednn_parity"] is False:  # recorded as wrong at export: never used afterwards
        assert not InferenceModel(folder, onednn=True).onednn
    got = model.logits(images)
    for net in (with_fast_conv, without):
        expected = _eager_logits(net, images)
        assert np.abs(got - expected).max() <= report["parity"]["tolerance"]
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_export_of_a_run_trained_without_fast_conv(mnist_run, tmp_path):
    run = _set_fast_conv(mnist_run, tmp_path / "run", on=False)
    assert main(["export", str(run)]) == 0
    report = _report(run / "inference")
    assert report["passed"] and "fast_conv off (the eager side" in report["exported_graph"]
    ours = json.loads((mnist_run / "inference" / "model.json").read_text())
    assert json.loads((run / "inference" / "model.json").read_text()).keys() == ours.keys()


def test_parity_report_and_preprocess_json(mnist_run):
    from paddle_cnn.config import load_config
    from paddle_cnn.data import dataset_stats, load_raw_splits, load_splits
    from paddle_cnn.inference import InferenceModel, file_digest

    folder = mnist_run / "inference"
    assert sorted(p.name for p in folder.iterdir()) == ["export_report.json", "model.json", "model.pdiparams",
                                                        "preprocess.json"]
    report = _report(folder)
    parity = report["parity"]
    assert parity["images"] == 64 and parity["split"] == "test"
    assert 0 < parity["tolerance"] < 0.05 and "2^-24" in parity["tolerance_rule"]
    assert {c["onednn"] for c in parity["checks"]} == {True, False}
    for check in parity["checks"]:
        assert check["passed"] and check["classes_identical"] and check["max_abs_diff"] <= parity["tolerance"]
    assert report["files"]["model.pdiparams"] == file_digest(folder / "model.pdiparams")
    spec = json.loads((folder / "preprocess.json").read_text())
    cfg = load_config(mnist_run / "config.yaml")
    assert (spec["size"], spec["channels"], spec["read_mode"]) == (28, 1, "L")
    assert (spec["mean"], spec["std"]) == tuple(map(list, dataset_stats(cfg.data, 1)))
    assert spec["classes"] == [str(i) for i in range(10)] and spec["output"]["meaning"].startswith("logits")
    assert spec["input"]["shape"] == [None, 1, 28, 28]
    # Drift check: the export's own preprocessing of the raw test split is the training data path's.
    model = InferenceModel(folder)
    raw = load_raw_splits(cfg.data, cfg.train.seed, ("test",))["test"]
    assert np.array_equal(model.preprocess(raw.images), load_splits(cfg.data, 1, cfg.train.seed)["test"].images)


@pytest.mark.parametrize("split", ["test", "dev"])
def test_evaluate_model_equals_evaluate_run(mnist_run, split, capsys):
    assert main(["evaluate", str(mnist_run), "--split", split]) == 0
    run_line = capsys.readouterr().out
    for flag in ([], ["--no-onednn"]):
        assert main(["evaluate", "--model", str(mnist_run / "inference"), "--split", split, *flag]) == 0
        model_line = capsys.readouterr().out
        accuracy = re.compile(r"accuracy ([\d.]+)% on (\d+) images")
        assert accuracy.search(model_line).groups() == accuracy.search(run_line).groups()
        loss = re.compile(r"loss ([\d.]+)")
        assert abs(float(loss.search(model_line).group(1)) - float(loss.search(run_line).group(1))) <= 1e-4
    png = "confusion_matrix.png" if split == "test" else "confusion_matrix_dev.png"
    assert (mnist_run / "inference" / png).read_bytes()[:4] == b"\x89PNG"


def test_predict_model_on_odd_sized_grey_and_colour_files(mnist_run, tmp_path, capsys):
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 60, size=(37, 53)).astype(np.uint8)
    grey[5:20, 10:30] = 240
    colour = rng.integers(0, 255, size=(61, 45, 3)).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    Image.fromarray(colour, "RGB").save(tmp_path / "colour.png")
    files = [str(tmp_path / "grey.png"), str(tmp_path / "colour.png")]
    assert main(["predict", str(mnist_run), "--images", *files]) == 0
    by_run = capsys.readouterr().out
    assert main(["predict", "--model", str(mnist_run / "inference"), "--images", *files]) == 0
    by_model = capsys.readouterr().out
    assert "(53x37 -> 1x28x28)" in by_model and "(45x61 -> 1x28x28)" in by_model
    run_top, model_top = TOP3.findall(by_run), TOP3.findall(by_model)
    assert [c for _, c, _ in model_top] == [c for _, c, _ in run_top]
    assert np.allclose([float(p) for *_, p in model_top], [float(p) for *_, p in run_top], atol=2e-4)
    assert main(["predict", "--model", str(mnist_run / "inference"), "--count", "8"]) == 0
    assert "accuracy on these 8 test samples" in capsys.readouterr().out
    assert (mnist_run / "inference" / "predictions.png").is_file()


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _fails(capfd, *args: str, words: list[str]) -> str:
    """Run the CLI in-process, expect exit code 2 and a one-paragraph error with these words."""
    assert main(list(args)) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")
    for word in words:
        assert word in err, (word, err)
    return err


def test_export_refuses_non_runs_unfinished_runs_and_corrupt_checkpoints(mnist_run, tmp_path, capfd):
    (tmp_path / "stuff").mkdir()
    _fails(capfd, "export", str(tmp_path / "stuff"), words=["not a run directory"])
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(mnist_run / "config.yaml", unfinished)
    _fails(capfd, "export", str(unfinished), words=["does not exist", "completed an epoch"])
    corrupt = tmp_path / "corrupt"
    shutil.copytree(mnist_run, corrupt)
    before = _snapshot(corrupt / "inference")
    best = corrupt / "checkpoints" / "best.pdparams"
    best.write_bytes(best.read_bytes()[:100])
    _fails(capfd, "export", str(corrupt), "--overwrite", words=["cannot be read", "truncated"])
    assert _snapshot(corrupt / "inference") == before
    assert not list(tmp_path.rglob(".inference.tmp-*"))


def test_existing_export_replaced_only_with_overwrite(mnist_run, tmp_path, capfd):
    run = tmp_path / "run"
    shutil.copytree(mnist_run, run)
    before = _snapshot(run / "inference")
    _fails(capfd, "export", str(run), words=["already holds an export", "--overwrite"])
    assert _snapshot(run / "inference") == before
    (run / "inference" / "stale.txt").write_text("from the old export")
    # What an export killed with -9 leaves behind (a pid that has exited): removed by the next export.
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = run / f".inference.tmp-{done.stdout.strip()}"
    (killed / "model").mkdir(parents=True)
    assert main(["export", str(run), "--overwrite", "--checkpoint", "last"]) == 0
    assert not killed.exists()
    assert not (run / "inference" / "stale.txt").exists() and _report(run / "inference")["checkpoint"] == "last"
    other = tmp_path / "documents"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    _fails(capfd, "export", str(run), "--output", str(other), "--overwrite", words=["does not hold an export"])
    assert (other / "notes.txt").read_text() == "mine"


def test_parity_mismatch_fails_and_writes_nothing(mnist_run, tmp_path, capfd, monkeypatch):
    from paddle_cnn import export

    real = export.run_predictor
    monkeypatch.setattr(export, "run_predictor", lambda p, x: real(p, x) + np.float32(0.5))
    err = _fails(capfd, "export", str(mnist_run), "--output", str(tmp_path / "out"),
                 words=["failed its parity check", "tolerance", "nothing was written"])
    assert "\n" not in err.strip()
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage, words", [
    ("missing model.json", ["model.json is missing"]),
    ("missing preprocess.json", ["preprocess.json is missing"]),
    ("corrupt model.json", ["SHA-256"]),
    ("truncated model.pdiparams", ["SHA-256", "truncated"]),
    ("corrupt preprocess.json", ["not readable JSON"]),
    ("garbage model.json, digests removed", ["cannot load the model", "corrupt"]),
])
def test_model_folder_damage_is_one_paragraph(mnist_run, tmp_path, capfd, damage, words):
    folder = tmp_path / "inference"
    shutil.copytree(mnist_run / "inference", folder)
    what, name = damage.split(",")[0].split(" ")
    path = folder / name
    if what == "missing":
        path.unlink()
    elif what == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_text("{ not json")
    if "digests removed" in damage:  # paddle.inference itself must then refuse it cleanly
        report = _report(folder)
        report["files"] = {}
        (folder / "export_report.json").write_text(json.dumps(report))
    before = _snapshot(folder)
    _fails(capfd, "evaluate", "--model", str(folder), words=words)
    assert _snapshot(folder) == before


def test_predict_model_refuses_non_images(mnist_run, tmp_path, capfd):
    (tmp_path / "notes.png").write_text("not an image")
    _fails(capfd, "predict", "--model", str(mnist_run / "inference"), "--images", str(tmp_path / "notes.png"),
           words=["not a readable PNG/JPG image"])
    _fails(capfd, "predict", str(mnist_run), "--model", str(mnist_run / "inference"), words=["exactly one of"])


def test_cli_subprocess_error_has_no_traceback(tmp_path):
    result = run_cli("evaluate", "--model", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "no such folder" in result.stderr


def test_bench_inference_writes_valid_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--inference", "--models", "lenet", "--batches", "1,3", "--steps", "1", "--repeats", "1",
                 "--no-torch", "--json", str(out)]) == 0
    assert "| lenet | 1x28x28 | 3 |" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["kind"] == "inference" and result["batches"] == [1, 3] and result["cpu"]["model"]
    assert [r["batch"] for r in result["rows"]] == [1, 3]
    for row in result["rows"]:
        for side in ("eager", "predictor", "onednn"):
            assert row[f"{side}_images_per_s"] > 0
        assert row["torch_images_per_s"] is None
        assert max(row["max_abs_diff"].values()) < 1e-3


def test_bench_inference_rejects_bad_batches(capfd):
    _fails(capfd, "bench", "--inference", "--batches", "0,x", words=["--batches", "at least 1"])


def test_export_onnx_checked_with_onnxruntime(mnist_run, tmp_path):
    pytest.importorskip("paddle2onnx")
    pytest.importorskip("onnxruntime")
    from paddle_cnn.inference import read_export

    out = tmp_path / "onnx"
    assert main(["export", str(mnist_run), "--output", str(out), "--onnx"]) == 0
    report = _report(out)
    onnx = [c for c in report["parity"]["checks"] if c["runtime"].startswith("onnxruntime")]
    assert len(onnx) == 1 and onnx[0]["passed"] and onnx[0]["max_abs_diff"] <= report["parity"]["tolerance"]
    assert "model.onnx" in report["files"]
    read_export(out)  # its digest is checked like the others


def test_export_onnx_without_the_extra_is_one_paragraph(mnist_run, tmp_path, capfd, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "paddle2onnx", None)  # import fails as when not installed
    _fails(capfd, "export", str(mnist_run), "--output", str(tmp_path / "x"), "--onnx", words=['.[onnx]'])
    assert not (tmp_path / "x").exists()
