"""Ctrl-C and SIGTERM during a run: one line, the local server stopped, exit 130.

SIGTERM is turned into :class:`KeyboardInterrupt` while a run lasts, so a
``kill PID`` unwinds the same ``with`` blocks as Ctrl-C does: the local
server started for the run is stopped, the loss plot saved, and the command
says where it stopped. (A SIGKILL cannot be caught: the local server then
goes by its parent-death signal, see :class:`~corteza.client.LocalServer`.)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`KeyboardInterrupt` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; Ctrl-C still works there
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
