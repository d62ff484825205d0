"""Termination signals turned into exceptions, so that cleanup code runs however a command is stopped.

Python turns only SIGINT into KeyboardInterrupt; SIGTERM (process managers, `timeout`, `docker
stop`) and SIGHUP (a closed terminal) otherwise end the process at once, skipping every `finally`
and leaving children such as the VisualDL server running. An inherited *ignored* disposition is
kept: a `nohup` launch asked for exactly that.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Callable, Iterator

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C


@contextlib.contextmanager
def raising_on(signums: tuple[int, ...], make_exc: Callable[[], BaseException]) -> Iterator[None]:
    """Within the block, each of signums raises make_exc() in the main thread.

    Args:
        signums: signals to catch (e.g. signal.SIGTERM).
        make_exc: builds the exception to raise (e.g. KeyboardInterrupt).
    """
    def handler(signum, frame):
        raise make_exc()

    old = {}
    try:
        for signum in signums:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                old[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: signals cannot be handled here, leave them alone
        pass
    try:
        yield
    finally:
        for signum, previous in old.items():
            signal.signal(signum, previous)
