"""Ctrl-C during training: finish the step, save a checkpoint, then exit (status 130 from the CLI)."""

from __future__ import annotations

import contextlib
import signal
from typing import Callable, Iterator


@contextlib.contextmanager
def deferred_ctrl_c(on_interrupt: Callable[[], None]) -> Iterator[None]:
    """Turn the first Ctrl-C into a call of ``on_interrupt``; a second Ctrl-C interrupts at once.

    Stopping between steps, never inside one, means the checkpoint saved afterwards never holds
    a half-applied optimizer update.
    """

    def handler(signum, frame):
        on_interrupt()
        signal.signal(signal.SIGINT, previous)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: signals cannot be caught here, leave Ctrl-C as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
