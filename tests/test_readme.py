"""The README stays true to the code: every config key, every command, the CI's install and test steps."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from paddle_cnn.cli import build_parser
from paddle_cnn.config import Config
from paddle_cnn.registry import COMMON_OPTIONS, model_info, model_names, option_specs

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _keys(cls, prefix=""):
    """(dotted key, default) of every leaf field of a config dataclass."""
    for f in dataclasses.fields(cls):
        if f.metadata.get("extra"):
            continue  # model options: free keys, listed per model (test_model_options_table_matches_the_registry)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            yield from _keys(type(default), f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, default


def _yaml_text(value) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def test_config_reference_lists_every_key_with_its_default():
    for key, default in _keys(Config):
        row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]*)` \|", README, re.MULTILINE)
        assert row, f"README config reference lacks {key}"
        shown = _yaml_text(default)
        assert row.group(1) == shown, f"{key}: README says {row.group(1)}, code says {shown}"


def test_every_registered_model_is_named_in_the_reference():
    row = re.search(r"^\| `model.name` .*$", README, re.MULTILINE).group(0)
    for name in model_names():
        assert f"`{name}`" in row, name


def _options_row(name: str) -> str:
    """The README row of a registered model, generated from its factory signature and metadata."""
    info = model_info(name)
    options = [f"`{k}: {_yaml_text(default)}`" for k, (_, default) in option_specs(name).items()
               if k not in COMMON_OPTIONS]
    side = info.input_size
    return f"| `{name}` | {info.in_channels}x{side}x{side} | {', '.join(options) or 'none'} |"


def test_model_options_table_matches_the_registry():
    table = README.split("| model | native input | options (default) |\n|---|---|---|\n", 1)[1].split("\n\n")[0]
    assert table.splitlines() == [_options_row(n) for n in model_names()], "regenerate the README model options table"


def test_every_subcommand_is_documented():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"`paddle-cnn {name}" in README, name


def test_ci_runs_the_readme_install_and_test_commands():
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in README and 'pip install --quiet -e ".[dev]"' in ci
    assert "python -m pytest" in README and re.search(r"^python -m pytest$", ci, re.MULTILINE)
    assert "bash scripts/install_browser.sh" in README and "bash scripts/install_browser.sh" in ci
