"""Typed run configuration: strict YAML loading, dotted `-o key=value` overrides, resolved dumps.

Loading never imports paddle (the runtime set-up must run before paddle loads) and never
evaluates anything: YAML goes through yaml.safe_load, values are checked against the dataclass
field types, and unknown keys are rejected with the closest valid key. The exception is `model:`,
whose keys beyond the typed ModelConfig fields are the factory's options: they are kept as given and
checked by registry.check_options once paddle may load. A file may say `base: other.yaml`.

Over 400 lines on purpose: the schema (dataclasses with their ranges) and the strict loader that
enforces it change together, and splitting them would let one drift from the other.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

DATASETS = ("mnist", "cifar10")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")


@dataclass
class RandomErasingConfig:
    """timm's random erasing: per image, with probability prob, one rectangle of the given area and aspect."""

    prob: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    area: list[float] = field(default_factory=lambda: [0.02, 0.33])  # fraction of the image, [lo, hi]
    aspect: list[float] = field(default_factory=lambda: [0.3, 3.3])  # height / width, [lo, hi], drawn log-uniform
    mode: Literal["const", "pixel"] = "const"  # fill with 0 (normalised: the mean colour) or N(0, 1) noise


@dataclass
class AugmentConfig:
    """Training-only augmentation, applied per batch."""

    crop_padding: int = field(default=0, metadata={"min": 0})
    horizontal_flip: bool = False
    # timm's Mixup semantics: one Beta(alpha, alpha) weight per batch, each image mixed with the
    # batch reversed; with both alphas > 0 a batch is cutmix with probability switch_prob.
    mixup_alpha: float = field(default=0.0, metadata={"min": 0.0})
    cutmix_alpha: float = field(default=0.0, metadata={"min": 0.0})
    mix_prob: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})
    switch_prob: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    random_erasing: RandomErasingConfig = field(default_factory=RandomErasingConfig)


@dataclass
class DataConfig:
    """Which dataset, where it lives, how it is split and normalised."""

    name: Literal["mnist", "cifar10"] = "mnist"
    root: str | None = None
    download: bool = False
    resize: int | None = field(default=None, metadata={"min": 1})
    mean: list[float] | None = None
    std: list[float] | None = None
    train_size: int | None = field(default=None, metadata={"min": 1})
    dev_size: int = field(default=5000, metadata={"min": 1})
    dev_split: Literal["random", "tail"] = "random"
    test_size: int | None = field(default=None, metadata={"min": 1})
    # Labels to keep (e.g. [5, 6, 7, 8, 9] for fine-tuning), remapped to 0..k-1 in this order.
    classes: list[int] | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """Architecture by registry name, its typed common fields, and free factory options.

    Every key under `model:` that is not a field below is an option of the factory (e.g. stem,
    width): they are kept in `factory_options` and checked against the factory's signature by
    registry.check_options, not here, since that needs the model modules, which import paddle.
    """

    name: str = "lenet"
    num_classes: int = field(default=10, metadata={"min": 2})
    in_channels: int = field(default=1, metadata={"min": 1})
    # metadata "extra": the mapping's unknown keys land here and are written back flat (to_dict).
    factory_options: dict[str, Any] = field(default_factory=dict, metadata={"extra": True})
    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)

    def options(self) -> dict[str, Any]:
        """Keyword options for the registry factory.

        Returns:
            num_classes, in_channels and every factory option given in the config.
        """
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, **self.factory_options}


@dataclass
class OptimizerConfig:
    """Optimizer by name and its hyperparameters."""

    name: Literal["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad", "adadelta"] = "sgd"
    lr: float = field(default=0.01, metadata={"min_exclusive": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 0.999})
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})
    # Rescale all gradients together when their global L2 norm exceeds this (ClipGradByGlobalNorm).
    grad_clip_norm: float | None = field(default=None, metadata={"min_exclusive": 0.0})


@dataclass
class ScheduleConfig:
    """Learning-rate schedule; durations are in epochs, applied at the step granularity they imply."""

    name: Literal["constant", "step", "cosine", "onecycle", "plateau"] = "constant"
    step_size: int = field(default=10, metadata={"min": 1})
    gamma: float = field(default=0.1, metadata={"min_exclusive": 0.0, "max": 1.0})
    warmup_epochs: float = field(default=0.0, metadata={"min": 0.0})
    min_lr: float = field(default=0.0, metadata={"min": 0.0})
    # plateau: lr *= factor once the dev metric has not improved for more than `patience` epochs,
    # then `cooldown` epochs of rest (Paddle's ReduceOnPlateau; its defaults).
    monitor: Literal["dev_acc", "dev_loss"] = "dev_acc"
    factor: float = field(default=0.1, metadata={"min_exclusive": 0.0, "max_exclusive": 1.0})
    patience: int = field(default=10, metadata={"min": 0})
    cooldown: int = field(default=0, metadata={"min": 0})


@dataclass
class EarlyStoppingConfig:
    """Stop when the dev metric has not improved by more than min_delta for `patience` epochs; off while null."""

    monitor: Literal["dev_acc", "dev_loss"] = "dev_acc"
    patience: int | None = field(default=None, metadata={"min": 1})
    min_delta: float = field(default=0.0, metadata={"min": 0.0})


@dataclass
class LossConfig:
    """The training loss (cross-entropy); dev and test always use the plain cross-entropy."""

    # Target (1 - eps) on the true class plus eps spread evenly over all classes (Szegedy et al. 2016).
    label_smoothing: float = field(default=0.0, metadata={"min": 0.0, "max_exclusive": 1.0})


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = field(default=5, metadata={"min": 1})
    batch_size: int = field(default=64, metadata={"min": 1})
    eval_batch_size: int = field(default=500, metadata={"min": 1})
    # One seed drives numpy and paddle generators; both refuse negatives, so the range is checked here.
    seed: int = field(default=0, metadata={"min": 0, "max": 2**31 - 1})
    log_every: int = field(default=50, metadata={"min": 1})
    # Every log_every steps, the L2 norm of each conv/linear weight's gradient to VisualDL
    # (grad_norm/<param>): makes vanishing gradients visible layer by layer.
    log_grad_norms: bool = False
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class RuntimeConfig:
    """Where and how the computation runs."""

    device: Literal["auto", "cpu", "gpu"] = "auto"
    threads: int | None = field(default=None, metadata={"min": 1})
    fast_conv: bool = True
    # Which conv fast_conv runs: onednn (the compiled oneDNN operator), gemm (batch GEMM or paddle's
    # kernel by shape), auto (onednn wherever it builds: faster on Intel and AMD, measured; else gemm).
    conv_kernel: Literal["auto", "onednn", "gemm"] = "auto"
    # Keep freed memory in the process (glibc) rather than page-fault it fresh for every large tensor:
    # faster training, peak memory ~25% higher on the CIFAR stem (runtime.keep_freed_memory_policy).
    keep_freed_memory: bool = True


@dataclass
class OutputConfig:
    """Where runs are written."""

    dir: str = "outputs"
    name: str | None = None


@dataclass
class Config:
    """A whole training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads 1e-3 as a float (YAML 1.1 needs a dot: 1.0e-3)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.VERBOSE),
    list("-+0123456789."),
)


def safe_load(text: str):
    """yaml.safe_load with YAML 1.2 floats (1e-3); never constructs Python objects.

    Args:
        text: YAML text.
    Returns:
        The plain data.
    """
    return yaml.load(text, Loader=_Loader)


def closest_hint(key: str, valid: list[str]) -> str:
    """A "did you mean" sentence for a mistyped key (shared with the registry's option check).

    Args:
        key: what was written.
        valid: the accepted names.
    Returns:
        "did you mean 'x'? " or "" when nothing is close.
    """
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"did you mean {match[0]!r}? " if match else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widened to float where asked)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner[0], where) if len(inner) == 1 else value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, list):
            return [_coerce(v, typing.get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(value)]
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}.")


def check_value(value: Any, tp: Any, where: str) -> Any:
    """Check a value against a type annotation with config strictness (for factory options).

    Args:
        value: the value from YAML.
        tp: an annotation; Annotated[float, {"min": 0.0}] also checks the range, Any accepts all.
        where: dotted key, for messages.
    Returns:
        The value (ints widened to float where asked). Raises ConfigError naming where and the type.
    """
    meta: dict = {}
    if typing.get_origin(tp) is typing.Annotated:
        tp, *extras = typing.get_args(tp)
        for item in extras:
            meta.update(item if isinstance(item, dict) else {})
    if tp is Any:
        return value
    try:
        value = _coerce(value, tp, where)
    except TypeError:  # an annotation _coerce has no rule for (e.g. a tuple type): the factory checks it
        return value
    _check_range(value, meta, where)
    return value


def _check_range(value: Any, meta: Any, where: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if not math.isfinite(value):  # .nan would pass every comparison below
        raise ConfigError(f"{where}: {value!r} is not a finite number.")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{where}: {value!r} is below the minimum {meta['min']}.")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise ConfigError(f"{where}: {value!r} must be greater than {meta['min_exclusive']}.")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{where}: {value!r} is above the maximum {meta['max']}.")
    if "max_exclusive" in meta and value >= meta["max_exclusive"]:
        raise ConfigError(f"{where}: {value!r} must be less than {meta['max_exclusive']}.")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build a config dataclass from plain data, rejecting unknown keys and wrong types.

    Args:
        cls: the dataclass type.
        data: a mapping (from YAML); None means all defaults.
        prefix: dotted path of this section, for messages.
    Returns:
        An instance of cls. Raises ConfigError naming the offending key.
    """
    where = prefix.rstrip(".") or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {data!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # A field marked "extra" (ModelConfig.factory_options) takes every key that is not a field;
    # null there means "the default", so it is not recorded.
    extra = next((f.name for f in fields.values() if f.metadata.get("extra")), None)
    typed = [name for name in fields if name != extra]
    hints = typing.get_type_hints(cls)
    kwargs = {extra: {}} if extra else {}
    for key, value in data.items():
        if key not in typed and extra:
            if value is not None:
                kwargs[extra][key] = _deep_copy(value)
            continue
        if key not in typed:
            raise ConfigError(
                f"unknown key '{prefix}{key}': {closest_hint(str(key), typed)}"
                f"valid keys{' in ' + where if prefix else ''} are: {', '.join(typed)}."
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
            _check_range(kwargs[key], fields[key].metadata, f"{prefix}{key}")
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one `-o a.b.c=value` override; the value is read as YAML (so 0.1, true, [1, 2] work).

    Args:
        text: the override as typed.
    Returns:
        (dotted key split into parts, parsed value). Raises ConfigError if it does not parse.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise ConfigError(f"override {text!r} does not parse: write it as section.key=value, e.g. optimizer.lr=0.01.")
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc.problem}).") from None
    return key.strip().split("."), value


def apply_override(data: dict, parts: list[str], value: Any) -> None:
    """Set a dotted key in nested plain data, creating sections as needed.

    Args:
        data: nested dict read from YAML (modified in place).
        parts: the key split on dots.
        value: the new value.
    """
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(parts)}: {part!r} is a value, not a section.")
        node = child
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with safe_load, turning every failure into a ConfigError.

    Args:
        path: file to read.
    Returns:
        The mapping. An empty or comment-only file is refused (`{}` asks for every default).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist (or is not a file); check the path.")
    try:
        data = safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: YAML syntax error{line}: {problem}. Fix the file and run again.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); a config must be a YAML text file.") from None
    if data is None:
        # An empty file is far more often a wrong path or an unsaved editor buffer than a wish
        # for every default; the wish can be said in one line.
        raise ConfigError(f"{path} is empty (or holds only comments), so it says nothing about the run. "
                          "Check that it is the file you meant; to train with every default, say so "
                          "explicitly with a one-line config such as `model: {name: lenet}` (or `{}`).")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, ...).")
    return data


def build_config(data: dict, overrides: list[str] = (), source: str = "the config") -> Config:
    """Validate plain config data plus overrides into a Config.

    Args:
        data: nested mapping as read from YAML.
        overrides: `key.sub=value` strings, applied in order.
        source: name of the file, for messages.
    Returns:
        The validated Config.
    """
    data = _apply_overrides(_deep_copy(data), overrides)
    try:
        cfg = from_dict(Config, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    _check_semantics(cfg, source)
    return cfg


def _apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `-o` style overrides in order; a changed model.name drops the options not given with it."""
    name_before, given = _model_name(data), set()
    for text in overrides:
        parts, value = parse_override(text)
        apply_override(data, parts, value)
        if parts[0] == "model":
            given |= set(parts[1:2]) or set(value if isinstance(value, dict) else ())
    if _model_name(data) != name_before and isinstance(data.get("model"), dict):
        # A variant or -o that switches architecture starts from the new model's defaults: the
        # file's options were chosen for the old model (which may not even take them).
        _drop_model_options(data["model"], keep=given)
    return data


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Load (following `base:`), override and validate a training config file.

    Args:
        path: YAML file.
        overrides: `key.sub=value` strings.
    Returns:
        The validated Config.
    """
    return build_config(read_config_data(path), overrides, source=str(path))


def read_config_data(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a training config as plain data, resolving `base: other.yaml` (relative to the file).

    Args:
        path: YAML file.
        _chain: files already being read (for the cycle check); callers leave it empty.
    Returns:
        The file's mapping deep-merged over its base's (recursively), without the base: key.
    """
    path = Path(path)
    chain = (*_chain, path.resolve())
    if path.resolve() in _chain:
        raise ConfigError(f"{path}: base: files form a cycle ({' -> '.join(str(p) for p in chain)}); "
                          f"a config may not be its own base, directly or through others.")
    data = read_yaml(path)
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base: must be the path of another training config, relative to this "
                          f"file (e.g. base: lenet_mnist.yaml), got {base!r}.")
    if not (path.parent / base).is_file():
        raise ConfigError(f"{path}: base: {base!r} does not exist (paths are relative to {path.parent}).")
    return merge_config_data(read_config_data(path.parent / base, chain), data)


def merge_config_data(base: dict, child: dict) -> dict:
    """Deep-merge a child config over its base: sections merge key by key, values replace.

    Args:
        base: plain data of the base config.
        child: plain data that overrides it.
    Returns:
        A new mapping. When the child names another model.name, the base's model options are dropped
        (as for overrides in build_config): they belong to the base's architecture.
    """
    out = _deep_copy(base)
    child_model = child.get("model")
    if isinstance(child_model, dict) and isinstance(out.get("model"), dict) \
            and "name" in child_model and child_model["name"] != _model_name(out):
        _drop_model_options(out["model"], keep=set())
    return _deep_merge(out, child)


def _deep_merge(base: dict, child: dict) -> dict:
    out = _deep_copy(base)
    for key, value in child.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value) if both else _deep_copy(value)
    return out


def _model_name(data: dict) -> Any:
    model = data.get("model")
    return model.get("name", ModelConfig.name) if isinstance(model, dict) else None


def _drop_model_options(model: dict, keep: set) -> None:
    """Remove the factory options (keys that are not typed ModelConfig fields) not in keep."""
    typed = {f.name for f in dataclasses.fields(ModelConfig) if not f.metadata.get("extra")}
    for key in [k for k in model if k not in typed and k not in keep]:
        del model[key]


# Both datasets (MNIST, CIFAR-10) have the ten labels 0..9.
DATASET_CLASSES = 10


def _check_semantics(cfg: Config, source: str) -> None:
    """Cross-field checks that one field's type cannot express."""
    d = cfg.data
    for name in ("mean", "std"):
        values = getattr(d, name)
        if values is not None and len(values) not in (1, cfg.model.in_channels):
            raise ConfigError(
                f"{source}: data.{name} has {len(values)} values; give 1 or one per input channel "
                f"(model.in_channels = {cfg.model.in_channels})."
            )
    if d.std is not None and any(s <= 0 for s in d.std):
        raise ConfigError(f"{source}: data.std values must be positive, got {d.std}.")
    if d.classes is not None:
        _check_classes(d.classes, cfg.model.num_classes, source)
    elif cfg.model.num_classes < DATASET_CLASSES:
        # Labels 0..9 would index past the model's outputs and fail deep inside the loss.
        k = cfg.model.num_classes
        raise ConfigError(f"{source}: model.num_classes is {k} but {d.name} has ten classes (labels 0..9); set "
                          f"model.num_classes: {DATASET_CLASSES}, or pick {k} of them with data.classes (e.g. "
                          f"data.classes: {list(range(k))}).")
    if cfg.schedule.name == "plateau" and cfg.schedule.warmup_epochs:
        # A warm-up wrapper would step the plateau rule per batch without the dev metric.
        raise ConfigError(f"{source}: schedule.warmup_epochs = {cfg.schedule.warmup_epochs} cannot be combined with "
                          f"schedule.name: plateau, which changes the learning rate only on the dev metric at "
                          f"epoch ends; set schedule.warmup_epochs: 0, or use cosine or step with warm-up.")
    _check_augment(d.augment, cfg.train.batch_size, source)


def _check_augment(aug: AugmentConfig, batch_size: int, source: str) -> None:
    """Random-erasing ranges, and mixing only with a partner in the batch."""
    ranges = (("area", 0.0, 1.0, "fractions of the image"), ("aspect", 0.0, math.inf, "height/width ratios"))
    for name, low, high, what in ranges:
        values = getattr(aug.random_erasing, name)
        if len(values) != 2 or not low < values[0] <= values[1] < high:
            bounds = f"{low} < lo <= hi < {high}" if high < math.inf else f"{low} < lo <= hi"
            raise ConfigError(f"{source}: data.augment.random_erasing.{name} must be [lo, hi], {what} with "
                              f"{bounds}, got {values}.")
    if (aug.mixup_alpha > 0 or aug.cutmix_alpha > 0) and aug.mix_prob > 0 and batch_size < 2:
        raise ConfigError(f"{source}: data.augment.mixup_alpha / cutmix_alpha mix each training image with "
                          f"another image of its batch (the batch reversed, as timm does), so train.batch_size "
                          f"= {batch_size} would mix every image with itself and train on unmixed images. "
                          f"Raise train.batch_size to at least 2, or set both alphas (or mix_prob) to 0.")


def _check_classes(classes: list[int], num_classes: int, source: str) -> None:
    """data.classes must name distinct dataset labels, one per model output."""
    if any(not 0 <= c < DATASET_CLASSES for c in classes) or len(set(classes)) != len(classes):
        raise ConfigError(f"{source}: data.classes must list distinct labels from 0 to 9 (both datasets have "
                          f"ten classes), got {classes}; null keeps every class.")
    if len(classes) != num_classes:
        raise ConfigError(f"{source}: data.classes keeps {len(classes)} classes but model.num_classes is "
                          f"{num_classes}; set model.num_classes: {len(classes)} (labels are remapped to "
                          f"0..{len(classes) - 1} in the order given).")


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (for YAML/JSON dumps), the shape from_dict reads.

    Args:
        cfg: a config dataclass instance.
    Returns:
        Nested dict of plain values; an "extra" field's keys (model options) sit beside the typed ones.
    """
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("extra"):
            out.update(_deep_copy(value))
        else:
            out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else _deep_copy(value)
    return out


def dump_yaml(cfg: Any) -> str:
    """The fully resolved config as YAML text, loadable again by load_config.

    Args:
        cfg: a config dataclass instance.
    Returns:
        YAML text.
    """
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
