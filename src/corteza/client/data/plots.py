"""The loss curve of a training run: a PNG (matplotlib) and TensorBoard scalars (tensorboardX).

Both libraries are optional extras, imported only when asked for:
``pip install 'corteza[plot]'`` and ``pip install 'corteza[tensorboard]'``.

>>> history = LossHistory()
>>> fit(client, X, y, on_batch=history.record)  # doctest: +SKIP
>>> save_loss_plot(history, "loss.png")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from corteza.client.training.progress import BatchReport

EXTRAS = {"matplotlib": "plot", "tensorboardX": "tensorboard"}


def missing_extra(module: str) -> str | None:
    """None when ``module`` imports, else one line naming the extra that installs it."""
    try:
        import_module(module)
    except ImportError:
        return f"{module} is not installed: pip install 'corteza[{EXTRAS[module]}]'"
    return None


@dataclass
class LossHistory:
    """Loss and throughput after each batch of one run (x = the run's batch number)."""

    batches: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # samples/s since the run began

    def record(self, report: BatchReport) -> None:
        """An ``on_batch`` callback for :func:`corteza.client.training.fit.fit`."""
        if report.loss is None:  # replayed, and the server no longer holds its answer
            return
        self.batches.append(report.index)
        self.losses.append(report.loss)
        self.rates.append(report.samples / report.elapsed if report.elapsed > 0 else 0.0)

    def __len__(self) -> int:
        return len(self.losses)


def moving_average(values: list[float], window: int) -> NDArray[np.float64]:
    """Mean of each run of ``window`` values (``len(values) - window + 1`` of them)."""
    kernel = np.full(window, 1.0 / window)
    return np.convolve(np.asarray(values, dtype=np.float64), kernel, mode="valid")


def plot_formats() -> list[str]:
    """File suffixes :func:`save_loss_plot` can write (``png``, ``svg``, ``pdf``...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return sorted(FigureCanvasAgg(Figure()).get_supported_filetypes())


def save_loss_plot(history: LossHistory, path: str | Path, *, title: str = "Training loss") -> Path:
    """Draw loss per batch and its moving average into ``path`` (the suffix picks the format)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    figure = Figure(figsize=(8, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no pyplot state
    axes = figure.add_subplot()
    axes.plot(history.batches, history.losses, color="#2f6fde", alpha=0.35, lw=1, label="batch")
    window = max(5, len(history) // 20)
    if len(history) >= 2 * window:
        axes.plot(
            history.batches[window - 1 :],
            moving_average(history.losses, window),
            color="#2f6fde",
            lw=2,
            label=f"mean of the last {window}",
        )
    axes.set(xlabel="batch", ylabel="loss", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


class TensorBoardScalars:
    """Writes ``loss`` and ``samples_per_second`` per batch for TensorBoard, as they come."""

    def __init__(self, logdir: str | Path) -> None:
        from tensorboardX import SummaryWriter

        self.logdir = Path(logdir)
        self._writer = SummaryWriter(logdir=str(self.logdir), flush_secs=10)

    def record(self, report: BatchReport) -> None:
        """An ``on_batch`` callback for :func:`corteza.client.training.fit.fit`."""
        if report.loss is not None:
            self._writer.add_scalar("loss", report.loss, report.index)
        if report.elapsed > 0:
            self._writer.add_scalar(
                "samples_per_second", report.samples / report.elapsed, report.index
            )

    def close(self) -> None:
        self._writer.close()
