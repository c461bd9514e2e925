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
from typing import Any, NoReturn

import typer

from corteza.cli.common import EXIT_INTERRUPTED, console, print_json


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


def report_interrupted(
    result: dict[str, Any], as_json: bool, *, local: bool, resumable: bool
) -> NoReturn:
    """Where the run stopped, and what became of it; exit 130."""
    if as_json:
        print_json(result)
    else:
        total = result["total_batches"]
        if local:
            then = "the local server is stopped, and what it trained with it"
        elif resumable:
            then = (
                "the server keeps what it trained; the same command resumes the run "
                "(--restart starts over)"
            )
        else:
            then = "the server keeps what it trained"
        console.print(
            f"interrupted at batch {result['batches']}/{total if total else '?'}: {then}",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(EXIT_INTERRUPTED)
