"""Model options as free keys checked against the factory, per-model metadata, and `base:` configs."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from paddle_cnn import registry
from paddle_cnn.cli import main
from paddle_cnn.config import build_config, dump_yaml, load_config
from paddle_cnn.errors import ConfigError
from paddle_cnn.registry import (
    COMMON_OPTIONS,
    model_info,
    model_names,
    option_specs,
    register_model,
)

# A valid non-default value for each string option (a new string option must add one here).
STRING_VALUES = {"activation": "tanh", "stem": "cifar", "shortcut_type": "B"}


def _other_value(option: str, annotation, default):
    """A valid value different from the default, chosen from the option's type."""
    base = getattr(annotation, "__origin__", annotation)  # Annotated[float, ...] -> float
    if base is bool:
        return not default
    if option == "num_classes":
        return 12  # above the datasets' ten: fewer needs data.classes
    if option == "in_channels":
        return 3 if default == 1 else 1
    if base is float:
        return default / 2
    assert option in STRING_VALUES, f"add a valid non-default value for {option!r} to STRING_VALUES"
    return STRING_VALUES[option]


def _every_option():
    return [(name, option) for name in model_names() for option in option_specs(name)]


@pytest.mark.parametrize("name, option", _every_option(), ids=lambda v: str(v))
def test_every_factory_option_is_settable_from_a_config(monkeypatch, tmp_path, name, option):
    annotation, default = option_specs(name)[option]
    value = _other_value(option, annotation, default)
    cfg = build_config({"model": {"name": name, option: value}, "runtime": {"fast_conv": False}})
    # It survives the run's config.yaml (what --resume, evaluate and predict read) ...
    (tmp_path / "config.yaml").write_text(dump_yaml(cfg))
    reloaded = load_config(tmp_path / "config.yaml")
    assert reloaded == cfg and yaml.safe_load(dump_yaml(cfg))["model"][option] == value
    # ... and reaches the factory when the run builds its network.
    info, seen = model_info(name), {}

    @functools.wraps(info.factory)
    def recording(**kwargs):
        seen.update(kwargs)
        return info.factory(**kwargs)

    monkeypatch.setitem(registry._MODELS, name, registry.ModelInfo(name, recording, info.input_size, info.fast_conv))
    from paddle_cnn.network import build_network

    assert build_network(reloaded) is not None
    assert seen[option] == value


def test_options_given_are_recorded_and_nothing_else():
    cfg = build_config({"model": {"name": "vgg11", "width": 0.25, "stem": None}})
    assert cfg.model.factory_options == {"width": 0.25}  # null means the factory's default
    assert set(yaml.safe_load(dump_yaml(cfg))["model"]) == {"name", "num_classes", "in_channels", "width",
                                                             "init_from", "freeze"}


@pytest.mark.parametrize("model, words", [
    ({"name": "resnet18", "use_residal": True},
     ["model.use_residal", "'resnet18' has no such option", "did you mean 'use_residual'",
      "activation, in_channels, num_classes, stem, use_residual"]),
    ({"name": "vgg11", "width": "wide"}, ["model.width: expected a number, got 'wide'"]),
    ({"name": "vgg11", "batch_norm": 1}, ["model.batch_norm: expected true/false"]),
    ({"name": "alexnet", "width": 0}, ["model.width: 0", "greater than 0"]),
    ({"name": "nin", "dropout": 1.0}, ["model.dropout: 1.0 is above the maximum 0.999"]),
    ({"name": "lenet", "stem": "cifar"}, ["model.stem", "'lenet' has no such option", "activation"]),
])
def test_unknown_or_mistyped_option_is_refused_before_anything_is_made(write_config, tmp_path, capsys, model, words):
    with pytest.raises(ConfigError) as err:
        registry.check_model_config(build_config({"model": model}).model)
    assert all(w in str(err.value) for w in words), str(err.value)
    # Through the CLI: refused after runtime.setup but before a run directory or the (missing) data.
    out = tmp_path / "out"
    config = write_config(data={"root": str(tmp_path / "no-data")}, model=model)
    code = main(["train", str(config), "--output-dir", str(out)])
    stderr = capsys.readouterr().err
    assert code == 2 and all(w in stderr for w in words) and "data not found" not in stderr, stderr
    assert not out.exists()


def test_compare_checks_every_variant_before_making_its_directory(write_config, tmp_path, capsys):
    base = write_config("base", model={"name": "resnet18", "in_channels": 1})
    spec = tmp_path / "cmp.yaml"
    spec.write_text(yaml.safe_dump({"base": base.name, "variants": [{"label": "ok"},
                                                                    {"label": "typo", "model.stme": "cifar"}]}))
    out = tmp_path / "cmp_out"
    code = main(["compare", str(spec), "--output-dir", str(out)])
    stderr = capsys.readouterr().err
    assert code == 2 and "variant typo" in stderr and "did you mean 'stem'" in stderr, stderr
    assert not out.exists()


def test_loading_a_config_with_model_options_does_not_import_paddle(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: resnet18, stem: cifar, use_residual: false}\n")
    code = ("import sys; from paddle_cnn.config import load_config; "
            f"cfg = load_config({str(path)!r}); assert cfg.model.factory_options['stem'] == 'cifar'; "
            "assert 'paddle' not in sys.modules, 'paddle was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- switching model.name


def test_an_override_that_switches_model_drops_the_old_models_options():
    base = {"model": {"name": "resnet18", "stem": "cifar", "use_residual": False, "in_channels": 3}}
    switched = build_config(base, ["model.name=vgg11", "model.width=0.5"]).model
    assert (switched.name, switched.factory_options, switched.in_channels) == ("vgg11", {"width": 0.5}, 3)
    # Options given with the switch are kept whatever their order; the same name keeps the file's options.
    assert build_config(base, ["model.width=0.5", "model.name=vgg11"]).model.factory_options == {"width": 0.5}
    kept = build_config(base, ["model.name=resnet18", "model.activation=tanh"]).model.factory_options
    assert kept == {"stem": "cifar", "use_residual": False, "activation": "tanh"}


# ----------------------------------------------------------------------------- metadata


def test_register_model_carries_metadata_and_checks_the_factory(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @register_model(input_size=20, fast_conv=False)
    def tiny_test_model(num_classes: int = 10, in_channels: int = 2, depth: int = 3):
        return (num_classes, in_channels, depth)

    info = model_info("tiny_test_model")
    assert (info.input_size, info.in_channels, info.fast_conv) == (20, 2, False)
    assert registry.build_model("tiny_test_model", depth=5) == (10, 2, 5)
    with pytest.raises(ConfigError, match="model.depth: expected an integer"):
        registry.build_model("tiny_test_model", depth=2.5)
    with pytest.raises(ValueError, match="registered twice"):
        register_model(tiny_test_model)
    with pytest.raises(ValueError, match="must take in_channels"):
        register_model(lambda num_classes=10: None)

    from paddle_cnn.bench.common import parse_models

    assert parse_models("tiny_test_model")[0].shape == (2, 20, 20)  # bench reads the metadata


def test_builtin_metadata():
    assert model_info("lenet").input_size == 28 and model_info("lenet5").input_size == 32
    assert model_info("lenet").in_channels == 1 and model_info("resnet18").in_channels == 3
    assert not model_info("lenet5_scratch").fast_conv and model_info("resnet18").fast_conv
    assert all(set(COMMON_OPTIONS) <= set(option_specs(n)) for n in model_names())


def test_fast_conv_is_skipped_for_models_it_does_not_apply_to(monkeypatch):
    from paddle_cnn import fast_conv, network

    calls = []
    monkeypatch.setattr(fast_conv, "enable", lambda net, onednn=False: calls.append(net) or 0)
    network.build_network(build_config({"model": {"name": "lenet5_scratch"}}))
    network.build_network(build_config({"model": {"name": "lenet5"}}))
    assert len(calls) == 1


# ----------------------------------------------------------------------------- base: inheritance


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_training_config_inherits_from_base_relative_to_the_file(tmp_path):
    _write(tmp_path / "base.yaml", {"model": {"name": "resnet18", "stem": "cifar", "in_channels": 3},
                                     "optimizer": {"name": "momentum", "lr": 0.1, "momentum": 0.8},
                                     "data": {"augment": {"crop_padding": 4}}})
    _write(tmp_path / "mid" / "mid.yaml", {"base": "../base.yaml", "optimizer": {"lr": 0.05},
                                            "data": {"augment": {"horizontal_flip": True}}})
    child = _write(tmp_path / "mid" / "child.yaml", {"base": "mid.yaml", "train": {"epochs": 2}})
    cfg = load_config(child, ["train.seed=3"])
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum) == ("momentum", 0.05, 0.8)
    assert (cfg.data.augment.crop_padding, cfg.data.augment.horizontal_flip) == (4, True)
    assert (cfg.model.factory_options, cfg.train.epochs, cfg.train.seed) == ({"stem": "cifar"}, 2, 3)
    # The run's config.yaml is resolved: no base:, and it loads to the same config.
    resolved = _write(tmp_path / "run" / "config.yaml", yaml.safe_load(dump_yaml(cfg)))
    assert "base" not in yaml.safe_load(resolved.read_text()) and load_config(resolved) == cfg


def test_a_child_that_switches_model_does_not_inherit_its_options(tmp_path):
    _write(tmp_path / "base.yaml", {"model": {"name": "resnet18", "stem": "cifar", "in_channels": 3}})
    child = _write(tmp_path / "child.yaml", {"base": "base.yaml", "model": {"name": "vgg11", "width": 0.25}})
    model = load_config(child).model
    assert (model.name, model.factory_options, model.in_channels) == ("vgg11", {"width": 0.25}, 3)


@pytest.mark.parametrize("files, words", [
    ({"a.yaml": {"base": "b.yaml"}, "b.yaml": {"base": "a.yaml"}}, ["cycle", "a.yaml -> ", "b.yaml -> "]),
    ({"a.yaml": {"base": "a.yaml"}}, ["cycle"]),
    ({"a.yaml": {"base": "missing.yaml"}}, ["base: 'missing.yaml' does not exist"]),
    ({"a.yaml": {"base": ["b.yaml"]}}, ["base: must be the path of another training config"]),
])
def test_bad_base_is_a_clear_error(tmp_path, files, words):
    for name, data in files.items():
        _write(tmp_path / name, data)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "a.yaml")
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_comparison_base_may_itself_have_a_base(tmp_path):
    from paddle_cnn.compare import load_comparison

    _write(tmp_path / "root.yaml", {"model": {"name": "resnet18", "in_channels": 1}, "train": {"epochs": 3}})
    _write(tmp_path / "base.yaml", {"base": "root.yaml", "optimizer": {"lr": 0.2}})
    spec = _write(tmp_path / "cmp.yaml", {"base": "base.yaml", "vary": {"model.use_residual": [True, False]}})
    comparison = load_comparison(spec)
    configs = [comparison.config(v, 0) for v in comparison.variants]
    assert [(c.train.epochs, c.optimizer.lr, c.model.factory_options["use_residual"]) for c in configs] == [
        (3, 0.2, True), (3, 0.2, False)]


def test_a_run_saved_before_options_were_free_keys_still_loads():
    """Older runs' config.yaml list every option of the old central list, null where unused."""
    old = {"model": {"name": "lenet", "num_classes": 10, "in_channels": 1, "use_residual": None, "stem": None,
                     "activation": None, "width": None, "dropout": None, "batch_norm": None, "init_from": None,
                     "freeze": []}}
    model = build_config(old).model
    registry.check_model_config(model)
    assert model.factory_options == {}
