"""The configured network: built by registry name, seeded, fast_conv applied, initialised, frozen.

Training (engine), evaluation (evaluate), export and bench all build networks through here, so
the same config gives the same network everywhere.
"""

from __future__ import annotations

import paddle

from . import fast_conv
from .config import Config
from .registry import build_model, model_info


def build_network(cfg: Config):
    """Build the configured network, seeded so the same config gives the same initial weights.

    With runtime.fast_conv its plain Conv2D layers become fast_conv.FastConv2D (same weights).

    Args:
        cfg: the run config.
    Returns:
        The paddle.nn.Layer.
    """
    paddle.seed(cfg.train.seed)
    net = build_model(cfg.model.name, **cfg.model.options())
    if cfg.runtime.fast_conv and model_info(cfg.model.name).fast_conv:
        fast_conv.enable(net, onednn=fast_conv.use_onednn(cfg.runtime.conv_kernel))
    return net


def initialize_from(net, state: dict, source: str, log=print) -> list[str]:
    """Copy every tensor whose name and shape match from a state_dict into net.

    Used for fine-tuning (model.init_from) and by comparisons, so that variants start from the
    same weights in the layers they share.

    Args:
        net: the network to initialise.
        state: a state_dict.
        source: where it came from, for the log line.
        log: where the summary goes.
    Returns:
        Names of net's tensors that were NOT initialised from state.
    """
    own = net.state_dict()
    matched = {k: v for k, v in state.items() if k in own and list(v.shape) == list(own[k].shape)}
    for key, value in matched.items():  # per tensor: set_state_dict would warn about every skipped one
        own[key].set_value(value)
    skipped = sorted(set(own) - set(matched))
    log(f"initialised {len(matched)}/{len(own)} tensors from {source}"
        + (f"; kept fresh: {', '.join(skipped[:8])}{' ...' if len(skipped) > 8 else ''}" if skipped else ""))
    return skipped


def freeze(net, prefixes: list[str]) -> list[str]:
    """Stop training every parameter whose name starts with one of the prefixes.

    Args:
        net: the network.
        prefixes: layer names such as "stem" or "layer1" (model.freeze).
    Returns:
        The frozen parameter names. Raises ConfigError for a prefix that matches nothing.
    """
    from .errors import ConfigError

    frozen = []
    for prefix in prefixes:
        names = [n for n, _ in net.named_parameters() if n == prefix or n.startswith(prefix + ".")]
        if not names:
            tops = sorted({n.split(".")[0] for n, _ in net.named_parameters()})
            raise ConfigError(f"model.freeze: {prefix!r} names no layer of {type(net).__name__}; "
                              f"top-level layers are: {', '.join(tops)}.")
        frozen += names
    for name, param in net.named_parameters():
        if name in frozen:
            param.stop_gradient = True
    return frozen
