"""The README and docs/ stay true to the code: every config key, every command, the CI's install and test steps,
every link; and the README stays short enough to read in ten minutes (the long material lives in docs/)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from paddle_cnn.cli import build_parser
from paddle_cnn.config import Config
from paddle_cnn.registry import COMMON_OPTIONS, model_info, model_names, option_specs

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
CONFIG_DOC = (DOCS / "config.md").read_text()  # the config reference and the per-model options table
README_MAX_CHARS = 15_000


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
        row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]*)` \|", CONFIG_DOC, re.MULTILINE)
        assert row, f"docs/config.md config reference lacks {key}"
        shown = _yaml_text(default)
        assert row.group(1) == shown, f"{key}: docs/config.md says {row.group(1)}, code says {shown}"


def test_every_registered_model_is_named_in_the_reference():
    row = re.search(r"^\| `model.name` .*$", CONFIG_DOC, re.MULTILINE).group(0)
    for name in model_names():
        assert f"`{name}`" in row, name


def _options_row(name: str) -> str:
    """The docs/config.md row of a registered model, generated from its factory signature and metadata."""
    info = model_info(name)
    options = [f"`{k}: {_yaml_text(default)}`" for k, (_, default) in option_specs(name).items()
               if k not in COMMON_OPTIONS]
    side = info.input_size
    return f"| `{name}` | {info.in_channels}x{side}x{side} | {', '.join(options) or 'none'} |"


def test_model_options_table_matches_the_registry():
    table = CONFIG_DOC.split("| model | native input | options (default) |\n|---|---|---|\n", 1)[1].split("\n\n")[0]
    expected = [_options_row(n) for n in model_names()]
    assert table.splitlines() == expected, "regenerate the docs/config.md model options table"


def test_every_subcommand_is_documented():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"`paddle-cnn {name}" in README, name


def test_ci_runs_the_readme_install_and_test_commands():
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in README and 'pip install --quiet -e ".[dev]"' in ci
    assert "python -m pytest" in README and re.search(r"^python -m pytest$", ci, re.MULTILINE)
    assert "bash scripts/install_browser.sh" in README and "bash scripts/install_browser.sh" in ci


# --- README size and the docs/ pages it links ------------------------------------------------------------------

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def _pages():
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)  # no headings in code
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_readme_stays_short():
    assert len(README) < README_MAX_CHARS, (
        f"README.md has {len(README):,} characters (limit {README_MAX_CHARS:,}): move long material to docs/")


def test_readme_links_every_docs_page_and_every_linked_page_exists():
    linked = {t.split("#")[0] for t in _LINK.findall(README) if t.startswith("docs/") and ".md" in t}
    for target in linked:
        assert (REPO / target).is_file(), f"README.md links {target}, which does not exist"
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages, "docs/ has no pages"
    assert pages <= linked, f"docs pages not linked from README.md: {sorted(pages - linked)}"


def test_every_link_and_image_resolves():
    for page in _pages():
        for target in _LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(REPO)} links {target}"
            assert dest.exists(), f"{where}: no such file"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{where}: no such heading in {dest.relative_to(REPO)}"


def test_module_map_in_docs_architecture_names_every_module():
    block = (REPO / "docs" / "architecture.md").read_text().split("```", 2)[1]
    src = REPO / "src" / "paddle_cnn"
    names = {p.stem for p in src.glob("*.py") if not p.stem.startswith("__")}
    names |= {p.stem for p in (src / "bench").glob("*.py") if not p.stem.startswith("__")} | {"models/", "bench/"}
    missing = sorted(n for n in names if not re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", block))
    assert not missing, f"the README's module map does not mention: {missing}"
