"""Model registry: architectures register a factory by name; configs build them by that name.

A factory's signature is its list of options (timm's `create_model(**kwargs)` style): any key under
`model:` other than the typed ModelConfig fields is passed to the factory, and check_options checks
it against the parameter names and type annotations, so a new option is one new parameter, with no
central list to extend. Per-model facts the rest of the project needs (native input size, whether
fast_conv applies) are given to @register_model and read back with model_info.

Factories live in modules that import paddle, so everything here that looks at a factory imports
them lazily: reading a config never does (runtime.setup must run before paddle loads); the CLI
checks the options right after setup, before a run directory is made or data is read.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import check_value, closest_hint
from .errors import ConfigError

# Options every factory takes; they are typed fields of ModelConfig, the rest are free keys.
COMMON_OPTIONS = ("num_classes", "in_channels")


@dataclass(frozen=True)
class ModelInfo:
    """What the project knows about a registered model besides how to build it.

    Attributes:
        name: registry name (the factory's function name).
        factory: the function building the paddle.nn.Layer.
        input_size: side of the square image the model is built for (e.g. 28 for the classic LeNet).
        fast_conv: runtime.fast_conv may swap its Conv2D layers (False when it has none to swap).
    """

    name: str
    factory: Callable[..., Any]
    input_size: int = 32
    fast_conv: bool = True

    @property
    def in_channels(self) -> int:
        """Default input channels: the factory's own default, so it is stated once."""
        return inspect.signature(self.factory).parameters["in_channels"].default


_MODELS: dict[str, ModelInfo] = {}


def register_model(fn: Callable[..., Any] | None = None, *, input_size: int = 32, fast_conv: bool = True):
    """Register a model factory under its function name, as `@register_model` or `@register_model(...)`.

    Args:
        fn: factory taking keyword options (num_classes, in_channels, ...) and returning a paddle.nn.Layer.
        input_size: native input side of the model (ModelInfo.input_size).
        fast_conv: whether runtime.fast_conv applies to it (ModelInfo.fast_conv).
    Returns:
        fn unchanged (or, called with options only, a decorator doing the same), so it can be stacked.
    """
    def register(factory: Callable[..., Any]) -> Callable[..., Any]:
        if factory.__name__ in _MODELS:
            raise ValueError(f"model {factory.__name__!r} is registered twice")
        missing = [p for p in COMMON_OPTIONS if p not in inspect.signature(factory).parameters]
        if missing:
            raise ValueError(f"model factory {factory.__name__!r} must take {', '.join(missing)}")
        _MODELS[factory.__name__] = ModelInfo(factory.__name__, factory, input_size, fast_conv)
        return factory

    return register if fn is None else register(fn)


def _load_builtin_models() -> None:
    # Importing the package runs every model file's @register_model; done lazily so that
    # reading a config never imports paddle before runtime.setup() has run.
    from . import models  # noqa: F401


def model_names() -> list[str]:
    """Names of all registered models.

    Returns:
        Sorted list of names usable as `model.name`.
    """
    _load_builtin_models()
    return sorted(_MODELS)


def model_info(name: str) -> ModelInfo:
    """Look up a registered model.

    Args:
        name: registered model name.
    Returns:
        Its ModelInfo. Raises ConfigError listing the valid names when unknown.
    """
    _load_builtin_models()
    if name not in _MODELS:
        raise ConfigError(
            f"model.name: unknown model {name!r}; {closest_hint(str(name), sorted(_MODELS))}"
            f"valid models are: {', '.join(sorted(_MODELS))}."
        )
    return _MODELS[name]


def get_factory(name: str) -> Callable[..., Any]:
    """Look up a factory by name.

    Args:
        name: registered model name.
    Returns:
        The factory. Raises ConfigError listing the valid names when unknown.
    """
    return model_info(name).factory


def option_specs(name: str) -> dict[str, tuple[Any, Any]]:
    """Every option of a model with its type annotation and default, in signature order.

    Args:
        name: registered model name.
    Returns:
        {option: (annotation or Any when the factory gives none, default)}.
    """
    factory = get_factory(name)
    # include_extras keeps Annotated ranges (see models._layers.Width); string annotations
    # (from __future__ import annotations) are resolved in the factory's module.
    hints = typing.get_type_hints(factory, include_extras=True)
    return {p: (hints.get(p, Any), param.default) for p, param in inspect.signature(factory).parameters.items()}


def model_options(name: str) -> set[str]:
    """Keyword options a registered model factory accepts.

    Args:
        name: registered model name.
    Returns:
        Set of parameter names of the factory.
    """
    return set(option_specs(name))


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check factory options against the signature: names, annotated types and ranges, as config keys are.

    Args:
        name: registered model name.
        options: option -> value; None means "the factory's default" and is dropped.
    Returns:
        The options without the Nones, ints widened to float where annotated. Raises ConfigError
        naming the option, the closest valid one and all valid ones; or naming the expected type.
    """
    specs = option_specs(name)
    checked = {}
    for key, value in options.items():
        if value is None:
            continue
        if key not in specs:
            raise ConfigError(
                f"model.{key} is set but model {name!r} has no such option; {closest_hint(str(key), list(specs))}"
                f"its options are: {', '.join(sorted(specs))}. Remove the key or pick another model."
            )
        checked[key] = check_value(value, specs[key][0], f"model.{key}")
    return checked


def check_model_config(model: Any) -> None:
    """Check a config's model section: the name is registered and every option fits the factory.

    Args:
        model: a config.ModelConfig.
    Returns:
        None. Raises ConfigError as check_options does (or for an unknown model name).
    """
    check_options(model.name, model.options())


def build_model(name: str, **options: Any):
    """Build a registered model.

    Args:
        name: registered model name.
        **options: factory options; options set to None are left at the factory's default.
    Returns:
        The paddle.nn.Layer. Raises ConfigError for an option the model does not take or of a wrong type.
    """
    return get_factory(name)(**check_options(name, options))
