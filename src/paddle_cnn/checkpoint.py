"""Checkpoints: one file per commit point, written atomically, checked against the model on load.

checkpoints/last.pdckpt holds everything a resume needs (weights, optimizer state with the LR
scheduler inside, completed epoch, global step, best dev accuracy, metrics so far) so that a kill
at any moment leaves one consistent state. checkpoints/best.pdparams is a plain state_dict of the
best epoch's weights, loadable with paddle.load / paddle.Model.load.

Security: paddle.load unpickles. A checkpoint from an untrusted source can run code; load only
files you made. This module only loads paths from a run directory or named by the user.
"""

from __future__ import annotations

from pathlib import Path

import paddle

from . import compat, fileio
from .errors import CheckpointError
from .rundir import BEST, LAST


def save_checkpoint(run_dir: Path, model: paddle.Model, meta: dict) -> None:
    """Write the resumable checkpoint atomically.

    Args:
        run_dir: the run directory.
        model: the prepared paddle.Model (network and optimizer).
        meta: progress to restore (epoch, global_step, best_acc, best_epoch, rows).
    """
    state = {"model": model.network.state_dict(), "optimizer": optimizer_state(model), "meta": meta}
    fileio.paddle_save(state, Path(run_dir) / LAST)


def _unique_to_structured(net: paddle.nn.Layer) -> dict[str, str]:
    return {p.name: name for name, p in net.named_parameters()}


def optimizer_state(model: paddle.Model) -> dict:
    """The optimizer's state with keys by structured parameter name (e.g. `conv1.weight:velocity_0`).

    Paddle keys optimizer state by parameter unique names (`conv2d_3.w_0_velocity_0`), which count
    the layers created earlier in the process: a resume in another process, or after other models
    were built (comparisons), would not find them. Structured names do not depend on that.

    Args:
        model: the prepared paddle.Model.
    Returns:
        The state dict, with `optimizer_keys: "structured"`.
    """
    names = _unique_to_structured(model.network)
    by_length = sorted(names, key=len, reverse=True)  # longest first: conv2d_11 before conv2d_1
    out = {"optimizer_keys": "structured"}
    for key, value in compat.optimizer_of(model).state_dict().items():
        if key == "master_weights":
            out[key] = {names.get(k, k): v for k, v in value.items()}
            continue
        unique = next((u for u in by_length if key.startswith(u + "_")), None)
        out[key if unique is None else f"{names[unique]}:{key[len(unique) + 1:]}"] = value
    return out


def restore_optimizer(model: paddle.Model, state: dict) -> None:
    """Load optimizer state written by optimizer_state into the model's optimizer.

    Args:
        model: the prepared paddle.Model, with the checkpoint's weights already loaded.
        state: the saved optimizer state.
    """
    state = dict(state)
    if state.pop("optimizer_keys", None) == "structured":
        unique = {v: k for k, v in _unique_to_structured(model.network).items()}
        restored = {}
        for key, value in state.items():
            if key == "master_weights":
                restored[key] = {unique.get(k, k): v for k, v in value.items()}
                continue
            name, sep, rest = key.partition(":")
            restored[f"{unique[name]}_{rest}" if sep and name in unique else key] = value
        state = restored
    compat.optimizer_of(model).set_state_dict(state)


def save_best(run_dir: Path, model: paddle.Model) -> None:
    """Write the best weights atomically.

    Args:
        run_dir: the run directory.
        model: the paddle.Model whose network weights to save.
    """
    fileio.paddle_save(model.network.state_dict(), Path(run_dir) / BEST)


def load_file(path: Path):
    """paddle.load with every failure turned into a CheckpointError naming the file.

    Args:
        path: checkpoint file.
    Returns:
        What was saved.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; is this a run directory of a run that "
                              f"completed an epoch?")
    try:
        return paddle.load(str(path))
    except Exception as exc:  # truncated or foreign files raise many types; all mean "unreadable"
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}); it is truncated or not a paddle checkpoint. "
            f"Use another checkpoint or train again."
        ) from None


def load_checkpoint(run_dir: Path) -> dict:
    """Read the resumable checkpoint of a run.

    Args:
        run_dir: the run directory.
    Returns:
        {"model", "optimizer", "meta"}.
    """
    state = load_file(Path(run_dir) / LAST)
    if not isinstance(state, dict) or not {"model", "optimizer", "meta"} <= set(state):
        raise CheckpointError(f"{Path(run_dir) / LAST} is not a paddle-cnn checkpoint (keys missing).")
    return state


def load_weights(net: paddle.nn.Layer, state: dict, source: Path) -> None:
    """Load a state_dict into net only if every key and shape matches.

    Args:
        net: the network.
        state: the saved state_dict.
        source: where it came from, for messages.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} does not hold model weights.")
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [(k, list(state[k].shape), list(own[k].shape)) for k in own if k in state
             and list(state[k].shape) != list(own[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(filter(None, [
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            "shape " + ", ".join(f"{k} {a} vs model {b}" for k, a, b in wrong[:3]) if wrong else "",
        ]))
        raise CheckpointError(
            f"{source} was saved from a different model ({detail}). Check model.name, model.num_classes "
            f"and the other model options against the run that wrote it."
        )
    net.set_state_dict(state)
