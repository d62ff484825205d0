"""Config loading: shipped configs, strict validation, overrides, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from paddle_cnn.config import Config, build_config, dump_yaml, load_config, read_yaml
from paddle_cnn.errors import ConfigError
from paddle_cnn.registry import model_names

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (REPO / "configs").rglob("*.yaml"))


def _is_comparison(path: Path) -> bool:
    return "vary" in read_yaml(path) or "variants" in read_yaml(path)


@pytest.mark.parametrize("path", [p for p in SHIPPED if not _is_comparison(p)], ids=lambda p: p.name)
def test_every_shipped_training_config_loads_and_names_a_registered_model(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.model.name in model_names()


def test_shipped_configs_exist():
    names = {p.name for p in SHIPPED}
    assert {"lenet_mnist.yaml", "book_5_3_lenet_mnist.yaml"} <= names


def test_every_hyperparameter_in_shipped_configs_has_a_comment():
    for path in SHIPPED:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", "name:", "- ")) or stripped.endswith(":"):
                continue  # blank, comment, section header, a name (self-describing) or list item
            assert "#" in line, f"{path.name}:{number} has no comment: {line!r}"


def test_unknown_key_names_file_key_and_closest_match(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optimizer:\n  name: sgd\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "optimizer.lrr" in message and "did you mean 'lr'" in message


def test_unknown_section_is_rejected_with_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'optimizer'"):
        build_config({"optimiser": {"lr": 0.1}})


@pytest.mark.parametrize("data, expected", [
    ({"train": {"batch_size": "64"}}, "train.batch_size: expected an integer"),
    ({"train": {"batch_size": 0}}, "train.batch_size: 0 is below the minimum 1"),
    ({"optimizer": {"lr": -0.1}}, "optimizer.lr: -0.1 must be greater than 0"),
    ({"optimizer": {"name": "adamm"}}, "optimizer.name: expected one of"),
    ({"data": {"name": "imagenet"}}, "'mnist', 'cifar10'"),
    ({"model": {"name": "resnet18", "use_residual": "yes"}}, "model.use_residual: expected true/false"),
    ({"train": {"epochs": 2.5}}, "train.epochs: expected an integer"),
    ({"data": {"mean": [0.5, 0.5]}}, "data.mean has 2 values"),
    ({"data": "mnist"}, "data: expected a mapping"),
    ({"train": {"seed": -1}}, "train.seed: -1 is below the minimum 0"),
    ({"model": {"num_classes": 5}}, "model.num_classes is 5 but mnist has ten classes"),
])
def test_wrong_type_or_value_names_the_key_and_what_is_allowed(data, expected):
    from paddle_cnn.registry import check_model_config

    with pytest.raises(ConfigError) as err:
        check_model_config(build_config(data).model)  # model options are checked against the factory
    assert expected in str(err.value)


def test_float_fields_accept_integers():
    assert build_config({"optimizer": {"lr": 1}}).optimizer.lr == 1.0


def test_overrides_apply_and_are_validated_the_same_way():
    cfg = build_config({}, ["optimizer.lr=0.5", "model.name=resnet18", "data.augment.horizontal_flip=true"])
    assert (cfg.optimizer.lr, cfg.model.name, cfg.data.augment.horizontal_flip) == (0.5, "resnet18", True)
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        build_config({}, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="train.batch_size: expected an integer"):
        build_config({}, ["train.batch_size=big"])


@pytest.mark.parametrize("text", ["optimizer.lr", "=3", "optimizer..lr=1", "optimizer.lr=[1,"])
def test_overrides_that_do_not_parse_say_how_to_write_them(text):
    with pytest.raises(ConfigError, match="override"):
        build_config({}, [text])


def test_yaml_syntax_error_reports_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  name: mnist\n model: [\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(path)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_is_never_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("data: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path):
    cfg = build_config({"model": {"name": "resnet18", "use_residual": False}}, ["optimizer.lr=0.2"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["optimizer"]["lr"] == 0.2


def test_unknown_model_lists_valid_models():
    from paddle_cnn.registry import build_model

    with pytest.raises(ConfigError) as err:
        build_model("lenett")
    assert "lenet5" in str(err.value) and "resnet18" in str(err.value)


def test_option_a_model_does_not_take_is_rejected():
    from paddle_cnn.registry import build_model

    with pytest.raises(ConfigError, match="model.use_residual is set but model 'lenet'"):
        build_model("lenet", use_residual=True)


@pytest.mark.parametrize("path", [p for p in SHIPPED if _is_comparison(p)], ids=lambda p: p.name)
def test_every_shipped_comparison_loads_with_all_variant_configs(path):
    from paddle_cnn.compare import load_comparison

    comparison = load_comparison(path)
    assert len(comparison.variants) >= 2 and comparison.seeds
    for variant in comparison.variants:
        assert comparison.config(variant, comparison.seeds[0]).model.name in model_names()


@pytest.mark.parametrize("text, value", [("optimizer.lr=1e-3", 1e-3), ("optimizer.lr=5E-4", 5e-4),
                                         ("optimizer.lr=.5", 0.5), ("optimizer.lr=2", 2.0)])
def test_scientific_notation_is_a_number(text, value):
    assert build_config({}, [text]).optimizer.lr == value


def test_scientific_notation_in_a_file(tmp_path):
    path = tmp_path / "sci.yaml"
    path.write_text("optimizer:\n  lr: 1e-4\n  weight_decay: 5e-4\n")
    cfg = load_config(path)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (1e-4, 5e-4)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_rejected(value):
    with pytest.raises(ConfigError, match="not a finite number"):
        build_config({}, [f"optimizer.lr={value}"])
