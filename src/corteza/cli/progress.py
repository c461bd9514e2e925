"""Training progress on the terminal: a live bar, or plain lines when nobody watches a bar.

Off a terminal (CI logs, ``2>&1 | tee run.log``, ``!corteza train`` in a
notebook) a live bar cannot redraw: rich prints it once, at the end, cut to
80 columns. There the progress is one full line per :data:`PLAIN_EVERY`
seconds instead, as pip and tqdm do, plus the first and the last batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from corteza.client.training.progress import BatchReport

PLAIN_EVERY = 5.0  # seconds between two plain progress lines


class TrainingProgress(Protocol):
    def update(self, report: BatchReport) -> None: ...

    def note(self, message: str) -> None: ...


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class PlainProgress:
    """One line per ``every`` seconds of ``clock``, and for the first and the last batch.

    ``quiet`` holds the progress lines back; :meth:`note` prints all the same.
    """

    def __init__(
        self,
        console: Console,
        *,
        quiet: bool = False,
        every: float = PLAIN_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.quiet = quiet
        self.every = every
        self.clock = clock
        self.loss = math.nan  # a replayed batch may come without its loss: keep the last one
        self.prob = math.nan
        self._last: BatchReport | None = None
        self._printed: BatchReport | None = None
        self._printed_at = -math.inf

    def update(self, report: BatchReport) -> None:
        self.loss = self.loss if report.loss is None else report.loss
        self.prob = self.prob if report.anomaly_prob is None else report.anomaly_prob
        self._last = report
        if self.quiet:
            return
        now = self.clock()
        if (
            self._printed is None
            or report.index >= report.total
            or now - self._printed_at >= self.every
        ):
            self._print(report)
            self._printed_at = now

    def finish(self) -> None:
        """Print the last batch if its line is not out yet (a run stopped early)."""
        if not self.quiet and self._last is not None and self._last is not self._printed:
            self._print(self._last)

    def note(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def line(self, report: BatchReport) -> str:
        rate = report.samples / report.elapsed if report.elapsed else 0.0
        done = report.index / report.total if report.total else 0.0
        parts = [
            f"training {report.index}/{report.total} batches ({done:.0%})",
            f"loss {self.loss:.4f}",
            f"p(anomaly) {self.prob:.3f}",
            f"{rate:.1f} samples/s",
            f"{_clock(report.elapsed)} elapsed",
        ]
        if 0 < report.index < report.total:
            left = report.elapsed / report.index * (report.total - report.index)
            parts.append(f"{_clock(left)} left")
        return ", ".join(parts)

    def _print(self, report: BatchReport) -> None:
        self.note(self.line(report))
        self._printed = report


class _BarProgress:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("train", total=None, loss=math.nan, prob=0.0, rate=0.0)

    def update(self, report: BatchReport) -> None:
        fields = self.progress.tasks[0].fields  # a replayed batch may come without its loss
        self.progress.update(
            self.task,
            completed=report.index,
            total=report.total,
            loss=fields["loss"] if report.loss is None else report.loss,
            prob=fields["prob"] if report.anomaly_prob is None else report.anomaly_prob,
            rate=report.samples / report.elapsed if report.elapsed else 0.0,
        )

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{escape(message)}[/]", highlight=False)


def live(console: Console) -> bool:
    """Whether ``console`` can redraw a bar (a terminal or a notebook)."""
    return console.is_terminal or console.is_jupyter


@contextmanager
def training_progress(console: Console, *, quiet: bool) -> Iterator[TrainingProgress]:
    """A live bar on a terminal, plain lines elsewhere, no progress when ``quiet``.

    ``note`` prints a message even when ``quiet`` (waits, warnings, fallbacks).
    """
    if not live(console):
        plain = PlainProgress(console, quiet=quiet)
        try:
            yield plain
        finally:
            plain.finish()
        return
    with Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("p(anomaly) {task.fields[prob]:.3f}"),
        TextColumn("{task.fields[rate]:.1f} samples/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    ) as progress:
        yield _BarProgress(progress)
