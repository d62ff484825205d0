"""Model registry: architectures register a factory by name; configs build them by that name."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from .errors import ConfigError

_MODELS: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a model factory under its function name.

    Args:
        fn: factory taking keyword options (num_classes, in_channels, ...) and returning a paddle.nn.Layer.
    Returns:
        fn unchanged, so the decorator can be stacked.
    """
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


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


def model_options(name: str) -> set[str]:
    """Keyword options a registered model factory accepts.

    Args:
        name: registered model name.
    Returns:
        Set of parameter names of the factory.
    """
    return set(inspect.signature(get_factory(name)).parameters)


def get_factory(name: str) -> Callable[..., Any]:
    """Look up a factory by name.

    Args:
        name: registered model name.
    Returns:
        The factory. Raises ConfigError listing the valid names when unknown.
    """
    _load_builtin_models()
    if name not in _MODELS:
        raise ConfigError(
            f"model.name: unknown model {name!r}; valid models are: {', '.join(sorted(_MODELS))}."
        )
    return _MODELS[name]


def build_model(name: str, **options: Any):
    """Build a registered model.

    Args:
        name: registered model name.
        **options: factory options; options set to None are left at the factory's default.
    Returns:
        The paddle.nn.Layer. Raises ConfigError for an option the model does not take.
    """
    factory = get_factory(name)
    accepted = set(inspect.signature(factory).parameters)
    given = {k: v for k, v in options.items() if v is not None}
    unsupported = sorted(set(given) - accepted)
    if unsupported:
        raise ConfigError(
            f"model.{unsupported[0]} is set but model {name!r} has no such option; "
            f"its options are: {', '.join(sorted(accepted))}. Remove the key or pick another model."
        )
    return factory(**given)
