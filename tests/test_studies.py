"""The course studies: gradient-norm logging, class subsets, fine-tuning, and the study configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import paddle
import pytest
from visualdl import LogReader

from paddle_cnn import callbacks, engine, network
from paddle_cnn.compare import load_comparison
from paddle_cnn.config import build_config, dump_yaml, load_config, read_yaml
from paddle_cnn.data import class_names, load_splits
from paddle_cnn.errors import ConfigError
from paddle_cnn.registry import build_model

from conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "configs" / "studies").glob("*.yaml"))
LENET_WEIGHTS = ["conv1.weight", "conv3.weight", "conv5.weight", "fc6.weight", "fc7.weight"]


def _train(data_root: Path, run_dir: Path, log=print, **sections) -> dict:
    cfg = build_config(tiny_config(data_root, **sections))
    run_dir.mkdir(parents=True)
    return engine.train(cfg, run_dir, log=log)


def _grad_norm_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    path = next((run_dir / "vdl" / "train").glob("vdlrecords*"))
    reader = LogReader(file_path=str(path))
    tags = [t for t in reader.get_tags().get("scalar", []) if t.startswith("grad_norm/")]
    return {t: [(r.id, r.value) for r in reader.get_data("scalar", t)] for t in tags}


# ----------------------------------------------------------------------------- gradient norms


def test_grad_norms_are_logged_per_weight_every_log_every_steps(tmp_path, data_root):
    # 500 training images / 50 per batch = 10 steps; log_every 4 -> steps 4 and 8.
    _train(data_root, tmp_path / "on", train={"epochs": 1, "log_every": 4, "log_grad_norms": True})
    scalars = _grad_norm_scalars(tmp_path / "on")
    assert sorted(scalars) == sorted(f"grad_norm/{name}" for name in LENET_WEIGHTS)
    for tag, points in scalars.items():
        assert [step for step, _ in points] == [4, 8], tag
        assert all(math.isfinite(v) and v > 0 for _, v in points), (tag, points)


def test_grad_norms_are_not_logged_when_off(tmp_path, data_root):
    _train(data_root, tmp_path / "off", train={"epochs": 1, "log_every": 4})
    assert _grad_norm_scalars(tmp_path / "off") == {}


class _Recorder:
    """Stands in for VdlLogger: keeps what grad_norms() receives."""

    def __init__(self):
        self.logged = []

    def grad_norms(self, step, norms):
        self.logged.append((step, dict(norms)))


def test_grad_norm_probe_reads_the_gradient_backward_produces():
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Conv2D(1, 2, 3), paddle.nn.Flatten(), paddle.nn.Linear(2 * 4 * 4, 3))
    sink, progress = _Recorder(), callbacks.Progress(global_step=1)
    probe = callbacks.GradNormProbe(net, sink, progress, every=2)
    probe.on_train_batch_begin(0)  # step 2: a logging step
    net(paddle.randn([4, 1, 6, 6])).square().mean().backward()
    probe.on_train_batch_end(0)
    step, norms = sink.logged[0]
    expected = {name: float(np.linalg.norm(p.grad.numpy())) for name, p in net.named_parameters()
                if name.endswith("weight")}
    assert step == 2 and set(norms) == set(expected) == {"0.weight", "2.weight"}
    for name, value in expected.items():
        assert norms[name] == pytest.approx(value, rel=1e-5)
    progress.global_step = 2
    probe.on_train_batch_begin(1)  # step 3: not a logging step
    net(paddle.randn([4, 1, 6, 6])).square().mean().backward()
    probe.on_train_batch_end(1)
    assert len(sink.logged) == 1


# ----------------------------------------------------------------------------- class subsets


def test_class_subset_keeps_only_those_labels_remapped_in_order(data_root):
    # The tiny MNIST has 60 training and 20 test images per digit.
    sizes = {"dev_size": 40, "test_size": None}
    full = load_splits(build_config(tiny_config(data_root, data=sizes)).data, 1, 0)
    cfg = build_config(tiny_config(data_root, data={"classes": [7, 2], **sizes}, model={"num_classes": 2}))
    subset = load_splits(cfg.data, 1, 0)
    for split in ("train", "dev", "test"):
        assert set(subset[split].labels.tolist()) == {0, 1}, split
    # The test split is taken in file order, so it must be exactly the 7s (now 0) and 2s (now 1).
    for new, old in ((0, 7), (1, 2)):
        np.testing.assert_array_equal(subset["test"].images[subset["test"].labels == new],
                                      full["test"].images[full["test"].labels == old])
    n_pool = sum(len(s.labels) for s in (subset["train"], subset["dev"]))
    assert n_pool == sum(int(np.isin(full[s].labels, [7, 2]).sum()) for s in ("train", "dev"))
    assert class_names(cfg.data) == ["7", "2"]


@pytest.mark.parametrize("data, model, message", [
    ({"classes": [5, 6, 7]}, {"num_classes": 10}, "model.num_classes: 3"),
    ({"classes": [1, 1]}, {"num_classes": 2}, "distinct labels from 0 to 9"),
    ({"classes": [3, 10]}, {"num_classes": 2}, "distinct labels from 0 to 9"),
])
def test_bad_class_subsets_are_config_errors(data_root, data, model, message):
    with pytest.raises(ConfigError, match=message):
        build_config(tiny_config(data_root, data=data, model=model))


# ----------------------------------------------------------------------------- fine-tuning


def _best(run_dir: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in paddle.load(str(run_dir / "checkpoints" / "best.pdparams")).items()}


def test_init_from_and_freeze(tmp_path, data_root):
    pre = tmp_path / "pretrain"
    _train(data_root, pre, train={"epochs": 1})
    lines = []
    _train(data_root, tmp_path / "finetune", log=lines.append, train={"epochs": 2},
           data={"classes": [6, 7, 8, 9], "test_size": None},
           model={"num_classes": 4, "init_from": str(pre), "freeze": ["conv1", "conv3"]})
    before, after = _best(pre), _best(tmp_path / "finetune")
    for name in ("conv1.weight", "conv1.bias", "conv3.weight", "conv3.bias"):
        np.testing.assert_array_equal(after[name], before[name], err_msg=f"{name} is frozen")
    for name in ("conv5.weight", "fc6.weight"):
        assert not np.allclose(after[name], before[name]), f"{name} should have been fine-tuned"
    # The 10-class head does not fit the 4-class model: it is the one part left freshly initialised.
    assert after["fc7.weight"].shape == (84, 4)
    assert any("initialised 8/10 tensors" in line and "kept fresh: fc7.bias, fc7.weight" in line for line in lines)


def test_initialize_from_returns_the_tensors_it_skipped():
    net5, net10 = build_model("lenet", num_classes=5), build_model("lenet", num_classes=10)
    skipped = network.initialize_from(net5, net10.state_dict(), "a 10-class lenet", log=lambda _: None)
    assert skipped == ["fc7.bias", "fc7.weight"]
    np.testing.assert_array_equal(net5.conv1.weight.numpy(), net10.conv1.weight.numpy())


# ----------------------------------------------------------------------------- study configs


def test_studies_exist_and_are_comparisons():
    names = {p.stem for p in STUDIES}
    assert {"optimizers", "activations", "regularisation", "finetune_lenet"} <= names
    for path in STUDIES:
        comparison = load_comparison(path)
        configs = [comparison.config(v, comparison.seeds[0]) for v in comparison.variants]
        assert len({dump_yaml(c) for c in configs}) == len(configs), f"{path.name}: two variants are the same"


def test_activation_study_logs_gradient_norms():
    comparison = load_comparison(REPO / "configs" / "studies" / "activations.yaml")
    configs = [comparison.config(v, 0) for v in comparison.variants]
    assert {c.model.factory_options["activation"] for c in configs} == {"sigmoid", "tanh", "relu", "leaky_relu"}
    assert all(c.train.log_grad_norms and c.model.name == "resnet18_plain" for c in configs)


def test_finetune_configs_point_at_the_pretraining_run():
    pretrain = load_config(REPO / "configs" / "finetune_lenet_mnist_pretrain.yaml")
    finetune = load_config(REPO / "configs" / "finetune_lenet_mnist.yaml")
    expected = str(Path(pretrain.output.dir) / (pretrain.output.name or "finetune_lenet_mnist_pretrain"))
    assert finetune.model.init_from == expected
    # Disjoint digits, and a head of a different size, so it is re-initialised rather than copied.
    assert not set(pretrain.data.classes) & set(finetune.data.classes)
    assert pretrain.model.num_classes != finetune.model.num_classes
    study = read_yaml(REPO / "configs" / "studies" / "finetune_lenet.yaml")
    assert (REPO / "configs" / "studies" / study["base"]).resolve() == (REPO / "configs" / "finetune_lenet_mnist.yaml")


def test_frozen_layers_are_not_counted_as_trainable(write_config, tmp_path):
    import json

    from paddle_cnn.cli import main

    out = tmp_path / "frozen"
    assert main(["train", str(write_config(model={"freeze": ["conv1", "conv3"]}, train={"epochs": 1})),
                 "--output-dir", str(out)]) == 0
    report = json.loads((out / "model_report.json").read_text())
    # conv1: 6*1*5*5+6 = 156, conv3: 16*6*5*5+16 = 2,416 frozen out of 61,706.
    assert report["total_params"] == 61706 and report["trainable_params"] == 61706 - 156 - 2416
