"""Comparisons: train variants of one base config under identical conditions, side by side.

A comparison file names a base training config, what to vary (`vary:` axes whose value lists are
crossed, or an explicit `variants:` list) and the seeds. Every variant of a seed gets the same data
split and batch order (both keyed by the seed), the same hyperparameters except the varied ones,
the same budget, and the same initial weights in every layer it shares with the first variant
(copied by name and shape). Each variant and seed is an ordinary run directory.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import rundir
from .config import Config, build_config, read_config_data, read_yaml
from .errors import ConfigError, RunDirError

COMPARISON_KEYS = ("name", "base", "overrides", "vary", "variants", "seeds")


@dataclass
class Variant:
    """One arm of a comparison: a label and the overrides that make it."""

    label: str
    overrides: dict[str, Any]


@dataclass
class Comparison:
    """A loaded, validated comparison."""

    name: str
    base_data: dict
    base_overrides: list[str]
    variants: list[Variant]
    seeds: list[int]
    source: str
    axes: dict[str, list] = field(default_factory=dict)  # the vary: axes, in file order ({} for variants:)
    base: Config = field(init=False)

    def __post_init__(self):
        self.base = build_config(self.base_data, self.base_overrides, self.source)

    def config(self, variant: Variant, seed: int) -> Config:
        """The full config of one variant and seed.

        Args:
            variant: the variant.
            seed: the seed.
        Returns:
            The validated Config.
        """
        extra = [f"{k}={json.dumps(v)}" for k, v in variant.overrides.items()] + [f"train.seed={seed}"]
        return build_config(self.base_data, self.base_overrides + extra, f"{self.source} (variant {variant.label})")

    def check_models(self) -> None:
        """Check every variant's model name and options against the registry's factories.

        Not part of load_comparison: the factories' modules import paddle, which must not load
        before runtime.setup(); `paddle-cnn compare` calls this right after it, before any directory is made.
        """
        from .registry import check_model_config

        for variant in self.variants:
            try:
                check_model_config(self.config(variant, self.seeds[0]).model)
            except ConfigError as exc:
                raise ConfigError(f"{self.source} (variant {variant.label}): {exc}") from None

    def default_dir(self) -> Path:
        """Where the comparison goes without --output-dir.

        Returns:
            <output.dir of the base>/<comparison name>.
        """
        return Path(self.base.output.dir) / self.name


def _label(overrides: dict[str, Any]) -> str:
    return ",".join(f"{k.split('.')[-1]}={json.dumps(v) if not isinstance(v, str) else v}"
                    for k, v in overrides.items())


def _variants(data: dict, source: str) -> list[Variant]:
    if ("vary" in data) == ("variants" in data):
        raise ConfigError(f"{source}: give exactly one of vary: (axes to cross) or variants: (an explicit list).")
    if "vary" in data:
        axes = data["vary"]
        if not isinstance(axes, dict) or not axes or not all(isinstance(v, list) and v for v in axes.values()):
            raise ConfigError(f"{source}: vary: must map dotted keys to non-empty lists, "
                              f"e.g. vary: {{model.use_residual: [true, false]}}.")
        combos = itertools.product(*axes.values())
        return [Variant(_label(dict(zip(axes, values))), dict(zip(axes, values))) for values in combos]
    items = data["variants"]
    if not isinstance(items, list) or not items or not all(isinstance(v, dict) for v in items):
        raise ConfigError(f"{source}: variants: must be a list of mappings of dotted keys to values "
                          f"(optionally with a label: key).")
    return [Variant(str(v.get("label") or _label({k: x for k, x in v.items() if k != "label"})),
                    {k: x for k, x in v.items() if k != "label"}) for v in items]


def load_comparison(path: str | Path, cli_overrides: list[str] = ()) -> Comparison:
    """Read and validate a comparison file, including every variant's config.

    Args:
        path: the comparison YAML.
        cli_overrides: `-o key=value` applied to the base of every variant.
    Returns:
        The Comparison. Raises ConfigError for any invalid part before anything runs.
    """
    path = Path(path)
    data = read_yaml(path)
    for key in data:
        if key not in COMPARISON_KEYS:
            match = difflib.get_close_matches(str(key), COMPARISON_KEYS, n=1)
            hint = f"did you mean {match[0]!r}? " if match else ""
            raise ConfigError(f"{path}: unknown key {key!r} in a comparison: {hint}valid keys are: "
                              f"{', '.join(COMPARISON_KEYS)}.")
    if "base" not in data:
        raise ConfigError(f"{path}: a comparison needs base: (the training config its variants start from).")
    base_path = (path.parent / str(data["base"])).resolve()
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: overrides: must map dotted keys to values.")
    seeds = data.get("seeds", [0])
    integers = isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    if not seeds or not integers:
        raise ConfigError(f"{path}: seeds: must be a non-empty list of integers, e.g. [0, 1, 2].")
    variants = _variants(data, str(path))
    if len({v.label for v in variants}) != len(variants):
        raise ConfigError(f"{path}: two variants have the same label; give each a distinct label:.")
    comparison = Comparison(str(data.get("name") or path.stem), read_config_data(base_path),
                            [f"{k}={json.dumps(v)}" for k, v in overrides.items()] + list(cli_overrides),
                            variants, seeds, str(path), dict(data.get("vary") or {}))
    for variant in variants:
        comparison.config(variant, seeds[0])  # fail now, not after hours of training
    return comparison


def run_dir_name(label: str) -> str:
    """A filesystem- and VisualDL-friendly folder name for a variant label.

    Args:
        label: the variant label.
    Returns:
        The folder name.
    """
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label).replace("=", "-")


def _prepare_dir(out_dir: Path, overwrite: bool, resume: bool) -> None:
    import shutil

    for lock in out_dir.rglob(rundir.LOCK_NAME) if out_dir.is_dir() else ():
        rundir.ensure_unlocked(lock.parent)  # a variant another process is training: never delete it
    if out_dir.is_dir() and any(out_dir.iterdir()) and not resume:
        if not overwrite:
            raise RunDirError(f"{out_dir} already holds a comparison. Pass --resume to keep its finished runs and "
                              f"continue the others, --overwrite to start again, or choose another --output-dir.")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _check_init_runs(comparison: Comparison) -> None:
    """Every model.init_from must name a finished run before the first variant trains."""
    for variant in comparison.variants:
        init_from = comparison.config(variant, comparison.seeds[0]).model.init_from
        if init_from and not (Path(init_from) / rundir.BEST).is_file():
            raise ConfigError(f"{comparison.source}: variant {variant.label} starts from model.init_from={init_from}, "
                              f"which holds no finished run (checkpoints/best.pdparams); train that run first.")


def run_comparison(comparison: Comparison, out_dir: Path, overwrite: bool = False, resume: bool = False,
                   log=print) -> str:
    """Train every variant for every seed, then write comparison.{json,md,png}.

    Args:
        comparison: the loaded comparison.
        out_dir: the comparison directory.
        overwrite: replace an existing comparison directory.
        resume: keep finished runs, resume unfinished ones.
        log: where progress lines go.
    Returns:
        The Markdown table (also in comparison.md).
    """
    from . import engine
    from .network import build_network

    out_dir = Path(out_dir)
    _check_init_runs(comparison)
    _prepare_dir(out_dir, overwrite, resume)
    for seed in comparison.seeds:
        # Shared layers start equal: every variant of this seed copies them from the first variant.
        shared = build_network(comparison.config(comparison.variants[0], seed)).state_dict()
        for variant in comparison.variants:
            run_dir = out_dir / run_dir_name(variant.label) / f"seed{seed}"
            status = rundir.status(run_dir)
            log(f"== {comparison.name}: {variant.label}, seed {seed} ({status}) -> {run_dir}")
            if status == "finished":
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            engine.train(comparison.config(variant, seed), run_dir, resume=status == "resumable", log=log,
                         init_state=shared)
    return write_summary(comparison, out_dir)


def _mean_spread(values: list[float]) -> dict:
    arr = np.array([v for v in values if v is not None], dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max()), "values": arr.tolist()}


def summarise_variant(comparison: Comparison, variant: Variant, out_dir: Path) -> tuple[dict, list[list[dict]]]:
    """Collect one variant's runs into per-seed numbers and mean/spread.

    Args:
        comparison: the comparison.
        variant: the variant.
        out_dir: the comparison directory.
    Returns:
        (summary dict, list of metrics rows per seed).
    """
    from .fileio import read_jsonl

    runs, curves = [], []
    for seed in comparison.seeds:
        run_dir = out_dir / run_dir_name(variant.label) / f"seed{seed}"
        results = json.loads((run_dir / rundir.RESULTS).read_text())
        report = json.loads((run_dir / rundir.MODEL_REPORT_JSON).read_text())
        rows = read_jsonl(run_dir / rundir.METRICS)
        curves.append(rows)
        runs.append({"seed": seed, "run_dir": str(run_dir), **report, **results})
    first = runs[0]
    summary = {
        "label": variant.label, "overrides": variant.overrides, "seeds": comparison.seeds,
        "trainable_params": first["trainable_params"], "total_params": first["total_params"], "macs": first["macs"],
        "test_samples": first["test_samples"], "dev_samples": first["dev_samples"],
        **{key: _mean_spread([r[key] for r in runs]) for key in (
            "best_dev_acc", "final_dev_acc", "test_acc", "best_epoch", "final_train_loss", "train_seconds",
            "images_per_s")},
        "runs": runs,
    }
    return summary, curves


def _pm(stat: dict, scale: float = 1.0, digits: int = 2) -> str:
    text = f"{stat['mean'] * scale:.{digits}f}"
    return text + (f" ± {stat['std'] * scale:.{digits}f}" if len(stat["values"]) > 1 else "")


def markdown_table(summaries: list[dict]) -> str:
    """The comparison as a Markdown table (mean ± std over seeds).

    Args:
        summaries: one summarise_variant() dict per variant.
    Returns:
        Markdown text.
    """
    lines = ["| variant | params | MACs | best dev acc (%) | final dev acc (%) | test acc (%) | best epoch | "
             "final train loss | train time (s) | images/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        lines.append(
            f"| {s['label']} | {s['trainable_params']:,} | {s['macs']:,} | {_pm(s['best_dev_acc'], 100)} | "
            f"{_pm(s['final_dev_acc'], 100)} | {_pm(s['test_acc'], 100)} | {_pm(s['best_epoch'], 1, 1)} | "
            f"{_pm(s['final_train_loss'], 1, 4)} | {_pm(s['train_seconds'], 1, 0)} | {_pm(s['images_per_s'], 1, 0)} |")
    return "\n".join(lines)


def figure_title(comparison: Comparison) -> str:
    """comparison.png's title: the name, the model (unless the variants change it) and the dataset.

    Args:
        comparison: the comparison.
    Returns:
        e.g. "residual_vs_plain: resnet18 on mnist", or "depth_cifar10 on cifar10" when model.name varies.
    """
    if any("model.name" in v.overrides for v in comparison.variants):
        return f"{comparison.name} on {comparison.base.data.name}"
    return f"{comparison.name}: {comparison.base.model.name} on {comparison.base.data.name}"


def write_summary(comparison: Comparison, out_dir: Path) -> str:
    """Write comparison.json, comparison.md and comparison.png from the finished runs.

    Args:
        comparison: the comparison.
        out_dir: the comparison directory.
    Returns:
        The Markdown report.
    """
    from .fileio import write_json, write_text
    from .plots import plot_comparison, plot_comparison_grid, plot_grad_norms

    collected = [summarise_variant(comparison, v, out_dir) for v in comparison.variants]
    summaries = [s for s, _ in collected]
    first = summaries[0]
    n_seeds = len(comparison.seeds)
    header = (f"# {comparison.name}\n\n{len(summaries)} variants x {n_seeds} seed(s) {comparison.seeds}; "
              f"dev accuracy on {first['dev_samples']:,} images, test accuracy on {first['test_samples']:,} images "
              f"(best-dev checkpoint); mean ± sample std over seeds. MACs per image as counted by paddle.flops.\n\n")
    text = header + markdown_table(summaries) + "\n"
    write_json(out_dir / rundir.COMPARISON, {"name": comparison.name, "seeds": comparison.seeds, "variants": summaries})
    write_text(out_dir / "comparison.md", text)
    plot_comparison({s["label"]: c for s, c in collected}, out_dir / "comparison.png", figure_title(comparison))
    written = "comparison.json, comparison.png"
    if len(comparison.axes) == 2:  # a crossed grid: also the paper-style layout, one panel per arm
        plot_comparison_grid(grid_curves(comparison, collected), out_dir / "comparison_grid.png",
                             f"{comparison.name} on {comparison.base.data.name}")
        written += ", comparison_grid.png"
    gradients = grad_norm_curves(comparison, out_dir)
    if gradients:
        plot_grad_norms(gradients, out_dir / "grad_norms.png",
                        f"{comparison.name} on {comparison.base.data.name}: gradient L2 norm per step")
        written += ", grad_norms.png"
    return text + f"\nwritten: {out_dir / 'comparison.md'}, {written}\n"


def grid_curves(comparison: Comparison, collected: list) -> dict:
    """Curves of a two-axis comparison arranged for plot_comparison_grid.

    Args:
        comparison: a comparison with exactly two vary: axes.
        collected: summarise_variant() results, in variant order.
    Returns:
        {panel title: {colour label: list of metrics rows per seed}}; the second axis gives the
        panels (e.g. plain | residual), the first the colours (e.g. depth).
    """
    (colour_key, _), (panel_key, panel_values) = comparison.axes.items()
    def title(value) -> str:
        return f"{panel_key.split('.')[-1]}: {json.dumps(value) if not isinstance(value, str) else value}"

    panels = {title(v): {} for v in panel_values}
    for summary, curves in collected:
        overrides = summary["overrides"]
        panels[title(overrides[panel_key])][str(overrides[colour_key])] = curves
    return panels


def grad_norm_curves(comparison: Comparison, out_dir: Path) -> dict:
    """First- and last-layer gradient norms of the variants that logged them (train.log_grad_norms).

    The first and last layer are the first and last weight GradNormProbe logs, in the network's
    registration order (the stem conv and the classifier for every registered model).

    Args:
        comparison: the comparison.
        out_dir: the comparison directory.
    Returns:
        {panel title: {variant label: list (one per seed) of (steps, norms)}}; {} when no variant logged them.
    """
    from .callbacks import probed_weights
    from .network import build_network
    from .vdl import read_step_scalars

    series, names = {"first": {}, "last": {}}, {"first": set(), "last": set()}
    for variant in comparison.variants:
        cfg = comparison.config(variant, comparison.seeds[0])
        if not cfg.train.log_grad_norms:
            continue
        weights = [name for name, _ in probed_weights(build_network(cfg))]
        for end, name in (("first", weights[0]), ("last", weights[-1])):
            tag = f"grad_norm/{name}"
            runs = [read_step_scalars(out_dir / run_dir_name(variant.label) / f"seed{seed}", [tag]).get(tag)
                    for seed in comparison.seeds]
            if all(runs):
                series[end][variant.label] = runs
                names[end].add(name)
    return {f"{end} layer ({', '.join(sorted(names[end]))})": curves for end, curves in series.items() if curves}
