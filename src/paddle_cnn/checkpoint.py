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

from . import fileio
from .errors import CheckpointError

LAST = Path("checkpoints") / "last.pdckpt"
BEST = Path("checkpoints") / "best.pdparams"


def save_checkpoint(run_dir: Path, model: paddle.Model, meta: dict) -> None:
    """Write the resumable checkpoint atomically.

    Args:
        run_dir: the run directory.
        model: the prepared paddle.Model (network and optimizer).
        meta: progress to restore (epoch, global_step, best_acc, best_epoch, rows).
    """
    state = {"model": model.network.state_dict(), "optimizer": model._optimizer.state_dict(), "meta": meta}
    fileio.paddle_save(state, Path(run_dir) / LAST)


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
        raise CheckpointError(f"checkpoint {path} does not exist; is this a run directory of a run that completed an epoch?")
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
