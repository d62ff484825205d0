"""`paddle-cnn compare`: loading, identical conditions across variants, output files, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml

from paddle_cnn.cli import main
from paddle_cnn.compare import figure_title, load_comparison
from paddle_cnn.errors import ConfigError

VARIANTS = ["use_residual-true", "use_residual-false"]


def _write_comparison(tmp_path: Path, data_root: Path, **extra) -> Path:
    from conftest import tiny_config

    base = tiny_config(data_root, model={"name": "resnet18", "stem": "imagenet", "in_channels": 1},
                       data={"train_size": 100, "dev_size": 100, "test_size": 100},
                       train={"epochs": 1, "batch_size": 50, "log_every": 1})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {"base": "base.yaml", "vary": {"model.use_residual": [True, False]}, "seeds": [0, 1], **extra}
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def comparison_dir(tmp_path_factory, data_root):
    """A finished 2-variant x 2-seed comparison with a learning rate too small to move the weights."""
    tmp = tmp_path_factory.mktemp("cmp")
    # SGD with lr 1e-12: trained weights stay equal to the initial ones to ~1e-9, so shared-layer
    # equality at the end is equality at the start.
    path = _write_comparison(tmp, data_root, overrides={"optimizer.name": "sgd", "optimizer.lr": 1e-12})
    out = tmp / "out"
    assert main(["compare", str(path), "--output-dir", str(out)]) == 0
    return out, path


def test_every_variant_and_seed_is_a_run_directory(comparison_dir):
    out, _ = comparison_dir
    for variant in VARIANTS:
        for seed in (0, 1):
            run = out / variant / f"seed{seed}"
            assert (run / "results.json").is_file() and (run / "checkpoints" / "best.pdparams").is_file()
            assert list((run / "vdl" / "train").glob("vdlrecords*")), "VisualDL run per variant/seed"
            assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == seed


def test_comparison_files(comparison_dir):
    out, _ = comparison_dir
    data = json.loads((out / "comparison.json").read_text())
    assert [v["label"] for v in data["variants"]] == ["use_residual=true", "use_residual=false"]
    for v in data["variants"]:
        assert len(v["test_acc"]["values"]) == 2 and v["test_samples"] == 100
        assert {"best_dev_acc", "final_dev_acc", "best_epoch", "final_train_loss", "train_seconds",
                "images_per_s", "macs", "trainable_params"} <= set(v)
    md = (out / "comparison.md").read_text()
    assert "| use_residual=true |" in md and "±" in md and "100 images" in md
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_plain_variant_lacks_exactly_the_projection_shortcuts(comparison_dir):
    out, _ = comparison_dir
    variants = json.loads((out / "comparison.json").read_text())["variants"]
    residual, plain = variants[0]["trainable_params"], variants[1]["trainable_params"]
    # Three 1x1 projections (64->128, 128->256, 256->512) without bias, each with a BatchNorm (2c).
    projections = (64 * 128 + 2 * 128) + (128 * 256 + 2 * 256) + (256 * 512 + 2 * 512)
    assert residual - plain == projections


def _weights(run: Path) -> dict:
    return {k: v.numpy() for k, v in paddle.load(str(run / "checkpoints" / "best.pdparams")).items()}


def test_shared_layers_start_identical_across_variants(comparison_dir):
    out, _ = comparison_dir
    for seed in (0, 1):
        res = _weights(out / VARIANTS[0] / f"seed{seed}")
        plain = _weights(out / VARIANTS[1] / f"seed{seed}")
        # Trainable tensors only: BatchNorm running statistics legitimately move with the data.
        shared = [k for k in plain if k.endswith(("weight", "bias"))]
        # 17 convs, 17 BatchNorms (gamma, beta), fc weight and bias; the residual arm has more (shortcuts).
        assert len(shared) == 17 + 17 * 2 + 2 and set(res) - set(plain)
        for key in shared:
            np.testing.assert_allclose(res[key], plain[key], atol=1e-7, err_msg=key)
    # ...while different seeds do start differently.
    a, b = _weights(out / VARIANTS[0] / "seed0"), _weights(out / VARIANTS[0] / "seed1")
    assert not np.allclose(a["layer1.0.conv1.weight"], b["layer1.0.conv1.weight"])


def test_variants_see_the_same_data(comparison_dir):
    out, _ = comparison_dir
    for seed in (0, 1):
        counts = {json.loads((out / v / f"seed{seed}" / "results.json").read_text())["train_samples"] for v in VARIANTS}
        configs = [yaml.safe_load((out / v / f"seed{seed}" / "config.yaml").read_text()) for v in VARIANTS]
        assert counts == {100}
        assert configs[0]["data"] == configs[1]["data"] and configs[0]["train"] == configs[1]["train"]
        assert configs[0]["model"]["use_residual"] is True and configs[1]["model"]["use_residual"] is False


def test_existing_comparison_is_refused_then_resumed_without_retraining(comparison_dir, capsys):
    out, path = comparison_dir
    results = out / VARIANTS[0] / "seed0" / "results.json"
    before = results.stat().st_mtime_ns
    assert main(["compare", str(path), "--output-dir", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["compare", str(path), "--output-dir", str(out), "--resume"]) == 0
    assert results.stat().st_mtime_ns == before
    assert "(finished)" in capsys.readouterr().out


def test_any_axis_and_explicit_variants(tmp_path, data_root):
    path = _write_comparison(tmp_path, data_root)
    data = yaml.safe_load(path.read_text())
    data["vary"] = {"optimizer.name": ["sgd", "adam"], "optimizer.lr": [0.1, 0.01]}
    path.write_text(yaml.safe_dump(data))
    cmp = load_comparison(path)
    assert len(cmp.variants) == 4
    configs = [cmp.config(v, 0) for v in cmp.variants]
    assert {(c.optimizer.name, c.optimizer.lr) for c in configs} == {("sgd", 0.1), ("sgd", 0.01), ("adam", 0.1),
                                                                    ("adam", 0.01)}
    del data["vary"]
    data["variants"] = [{"label": "lenet", "model.name": "lenet"}, {"model.name": "resnet18", "model.stem": "cifar"}]
    path.write_text(yaml.safe_dump(data))
    cmp = load_comparison(path)
    assert [v.label for v in cmp.variants] == ["lenet", "name=resnet18,stem=cifar"]


@pytest.mark.parametrize("change, message", [
    ({"vary": {"model.use_residal": [True, False]}}, "did you mean 'use_residual'"),
    ({"seed": [0]}, "did you mean 'seeds'"),
    ({"vary": {"model.use_residual": True}}, "non-empty lists"),
    ({"seeds": "0"}, "list of integers"),
    ({"vary": {"optimizer.lr": [0.1, -1]}}, "optimizer.lr"),
])
def test_bad_comparisons_fail_before_training(tmp_path, data_root, change, message):
    path = _write_comparison(tmp_path, data_root)
    data = {**yaml.safe_load(path.read_text()), **change}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_comparison(path).check_models()  # model options are checked once the model modules may load


def test_missing_init_from_run_fails_before_any_variant_trains(tmp_path, data_root, capsys):
    path = _write_comparison(tmp_path, data_root)
    data = yaml.safe_load(path.read_text())
    del data["vary"]
    data["variants"] = [{"label": "scratch"}, {"label": "pretrained", "model.init_from": str(tmp_path / "nowhere")}]
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["compare", str(path), "--output-dir", str(out)]) == 2
    assert "pretrained" in capsys.readouterr().err and not out.exists()


def test_two_axis_grid_puts_the_second_axis_in_panels_and_the_first_in_colours(tmp_path, data_root):
    from paddle_cnn.compare import grid_curves
    from paddle_cnn.plots import plot_comparison_grid

    path = _write_comparison(tmp_path, data_root)
    data = yaml.safe_load(path.read_text())
    data["vary"] = {"optimizer.lr": [0.1, 0.01], "model.use_residual": [False, True]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))  # the axes' order is the meaning
    cmp = load_comparison(path)
    # Fake per-seed curves whose train_acc encodes the variant, so a misplaced curve is visible.
    collected = [({"overrides": v.overrides}, [[{"epoch": 1, "train_acc": i / 10, "dev_acc": i / 10}]] * 2)
                 for i, v in enumerate(cmp.variants)]
    panels = grid_curves(cmp, collected)
    assert list(panels) == ["use_residual: false", "use_residual: true"]
    for title, series in panels.items():
        assert list(series) == ["0.1", "0.01"]
        for lr, runs in series.items():
            i = next(k for k, v in enumerate(cmp.variants) if v.overrides == {
                "optimizer.lr": float(lr), "model.use_residual": title.endswith("true")})
            assert runs[0][0]["train_acc"] == i / 10
    plot_comparison_grid(panels, tmp_path / "grid.png", "grid")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_grad_norm_figure_reads_each_runs_first_and_last_layer(tmp_path, data_root):
    from visualdl import LogWriter

    from paddle_cnn.callbacks import probed_weights
    from paddle_cnn.compare import grad_norm_curves, run_dir_name
    from paddle_cnn.network import build_network

    cmp = load_comparison(_write_comparison(tmp_path, data_root, overrides={"train.log_grad_norms": True}))
    names = [n for n, _ in probed_weights(build_network(cmp.config(cmp.variants[0], 0)))]
    out = tmp_path / "out"
    # Fake logs in which every norm encodes its variant, seed and layer, so a wrong pick is visible.
    for v, variant in enumerate(cmp.variants):
        for seed in cmp.seeds:
            with LogWriter(logdir=str(out / run_dir_name(variant.label) / f"seed{seed}" / "vdl" / "train")) as w:
                for layer, name in enumerate(names):
                    for step in (2, 4):
                        w.add_scalar(f"grad_norm/{name}", 1000 * v + 100 * seed + layer + step / 10, step)
    panels = grad_norm_curves(cmp, out)
    assert list(panels) == [f"first layer ({names[0]})", f"last layer ({names[-1]})"]
    for (title, series), layer in zip(panels.items(), (0, len(names) - 1)):
        assert list(series) == [v.label for v in cmp.variants]
        for v, runs in enumerate(series.values()):
            for seed, (steps, norms) in zip(cmp.seeds, runs):
                assert steps == [2, 4]
                np.testing.assert_allclose(norms, [1000 * v + 100 * seed + layer + s / 10 for s in steps], rtol=1e-6)


def test_figure_title_names_the_model_only_when_no_variant_changes_it():
    repo = Path(__file__).resolve().parents[1] / "configs"
    assert figure_title(load_comparison(repo / "compare_resnet18_mnist.yaml")).endswith(": resnet18 on mnist")
    # Before: "depth_cifar10: resnet20 on cifar10", naming the base model of a ResNet-20 vs -56 study.
    assert figure_title(load_comparison(repo / "compare_depth_cifar10.yaml")) == "depth_cifar10 on cifar10"


def test_comparison_that_logs_grad_norms_draws_them(tmp_path, data_root):
    path = _write_comparison(tmp_path, data_root, overrides={"train.log_grad_norms": True}, seeds=[0])
    out = tmp_path / "out"
    assert main(["compare", str(path), "--output-dir", str(out)]) == 0
    assert (out / "grad_norms.png").read_bytes()[:4] == b"\x89PNG"


def test_comparison_without_grad_norms_draws_no_gradient_figure(comparison_dir):
    out, _ = comparison_dir
    assert (out / "comparison.png").is_file() and not (out / "grad_norms.png").exists()
