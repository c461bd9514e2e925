"""The training run behind ``corteza train`` and ``corteza demo``.

Progress while it trains (:mod:`corteza.cli.progress`), then the seed example's closing summary plus
the held-out ROC-AUC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib.util import find_spec
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from corteza.cli.common import console
from corteza.cli.predict import score
from corteza.cli.progress import training_progress
from corteza.client import Client, InvalidDataError, LocalServer
from corteza.client.data.datasets import Dataset, split
from corteza.client.data.metrics import roc_auc
from corteza.client.training.fit import fit
from corteza.client.training.progress import BatchReport, FitSummary
from corteza.wire import dimension_mismatch
from corteza.wire.model_config import PRESETS

# The stream logs each of its events and hands it to on_event too, where the run
# prints it: without a handler of its own, Python's last resort printed it twice.
logging.getLogger("corteza.client.training.stream").addHandler(logging.NullHandler())

# The seed's words stay on the seed's routes (/metricas); the summary speaks English.
TRENDS = {
    "mejorando": "improving",
    "empeorando": "getting worse",
    "estable": "steady",
    "sin_datos": "not enough data",
}


@dataclass(frozen=True)
class RunOptions:
    epochs: int = 1
    batch_size: int = 32
    seed: int = 0
    feedback_every: int = 5
    until_loss: float | None = None
    stream: bool = True  # WebSocket with a window in flight; False: one request per batch
    window: int = 4  # batches in flight on the stream
    run_id: str | None = None  # None: a new run; an interrupted run's id resumes it


def _check_local_model(local_args: list[str]) -> None:
    """Refuse, before a server process starts, a width the local model cannot take."""
    preset = local_args[local_args.index("--preset") + 1] if "--preset" in local_args else "default"
    if preset not in PRESETS or "--input-dim" not in local_args:
        return
    width = int(local_args[local_args.index("--input-dim") + 1])
    try:
        replace(PRESETS[preset], input_dim=width)
    except ValueError as exc:
        raise InvalidDataError(
            f"A local server (--preset {preset}) cannot take data {width} values wide: {exc}",
            error_type="invalid_data",
        ) from None


@contextmanager
def server_for(url: str | None, local_args: list[str], *, quiet: bool) -> Iterator[str]:
    """``url`` as given, or an embedded local server started for the run."""
    if url is not None:
        yield url
        return
    missing = [name for name in ("torch", "fastapi", "uvicorn") if not _importable(name)]
    if missing:
        raise InvalidDataError(
            "No server configured, and this install cannot start a local one (missing "
            f"{', '.join(missing)}): pass --server URL, set CORTEZA_URL, or "
            "pip install 'corteza[server]'",
            error_type="no_server",
        )
    _check_local_model(local_args)
    if not quiet:
        console.print("No server configured: starting a local one on 127.0.0.1...")
        if "--input-dim" in local_args:
            width = local_args[local_args.index("--input-dim") + 1]
            console.print(f"The local server takes the data's width: --input-dim {width}.")
    with LocalServer(local_args) as local:
        if not quiet:
            console.print(
                f"Live: {local.url}/ in a browser, or corteza watch --server {local.url}",
                soft_wrap=True,
            )
        yield local.url


def _importable(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except ImportError:
        return False


def run(
    client: Client,
    train: Dataset,
    holdout: Dataset | None,
    options: RunOptions,
    *,
    quiet: bool,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> dict[str, Any]:
    """Train, evaluate on ``holdout``, and return the summary as a dict.

    ``on_batch`` hears every batch too (the loss plot and TensorBoard record there).
    """
    seen = _Seen(on_batch)
    try:
        summary = _train_with_progress(client, train, options, quiet=quiet, listener=seen)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM under sigterm_as_interrupt
        return seen.interrupted(options, 0 if holdout is None else len(holdout))
    metrics = client.metrics()
    auc: float | None = None
    if holdout is not None and len(holdout) and 0 < holdout.y.sum() < len(holdout):
        parts = score(client, holdout.X)  # in requests the server takes
        auc = roc_auc(holdout.y, np.concatenate([p.anomaly_prob for p in parts]))
    return {
        "samples": summary.samples,
        "batches": summary.batches,
        "first_loss": summary.losses[0] if summary.losses else None,
        "final_loss": summary.final_loss,
        "mean_anomaly": summary.mean_anomaly,
        "anomaly_rate": summary.anomaly_rate,
        "seconds": summary.seconds,
        "samples_per_second": summary.samples_per_second,
        "trend": metrics.tendencia,
        "feedback_rate": metrics.feedback_tasa_exito,
        "holdout_samples": 0 if holdout is None else len(holdout),
        "roc_auc": auc,
        "until_loss": options.until_loss,
        "reached_target": summary.reached_target,
        "run_id": summary.run_id,
        "transport": summary.transport,
        "total_batches": summary.batches,
        "interrupted": False,
    }


class _Seen:
    """The batches a run got through, for the result of an interrupted run."""

    def __init__(self, listener: Callable[[BatchReport], None] | None) -> None:
        self.listener = listener
        self.last: BatchReport | None = None
        self.losses: list[float] = []

    def __call__(self, report: BatchReport) -> None:
        self.last = report
        if report.loss is not None:
            self.losses.append(report.loss)
        if self.listener is not None:
            self.listener(report)

    def interrupted(self, options: RunOptions, holdout_samples: int) -> dict[str, Any]:
        last = self.last
        seconds = 0.0 if last is None else last.elapsed
        samples = 0 if last is None else last.samples
        return {
            "samples": samples,
            "batches": 0 if last is None else last.index,
            "first_loss": self.losses[0] if self.losses else None,
            "final_loss": self.losses[-1] if self.losses else None,
            "mean_anomaly": None,
            "anomaly_rate": None,
            "seconds": seconds,
            "samples_per_second": samples / seconds if seconds else None,
            "trend": None,
            "feedback_rate": None,
            "holdout_samples": holdout_samples,
            "roc_auc": None,
            "until_loss": options.until_loss,
            "reached_target": False,
            "run_id": options.run_id,
            "transport": None,
            "total_batches": None if last is None else last.total,
            "interrupted": True,
        }


def _train_with_progress(
    client: Client,
    data: Dataset,
    options: RunOptions,
    *,
    quiet: bool,
    listener: Callable[[BatchReport], None] | None = None,
) -> FitSummary:
    with training_progress(console, quiet=quiet) as progress:

        def on_batch(report: BatchReport) -> None:
            if listener is not None:  # first: an interrupt while drawing still counts it
                listener(report)
            progress.update(report)

        def on_event(kind: str, message: str) -> None:
            if kind in ("waiting", "warning", "fallback", "resumed"):  # even with --json
                progress.note(message)

        return fit(
            client,
            data.X,
            data.y,
            epochs=options.epochs,
            batch_size=options.batch_size,
            seed=options.seed,
            feedback_every=options.feedback_every,
            until_loss=options.until_loss,
            on_batch=on_batch,
            stream=options.stream,
            window=options.window,
            on_event=on_event,
            run_id=options.run_id,
            dendrite_target=data.dendrite_target,
            coherence_target=data.coherence_target,
        )


def print_summary(result: dict[str, Any]) -> None:
    table = Table(title="Training summary", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")

    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    table.add_row("samples", str(result["samples"]))
    table.add_row("batches", str(result["batches"]))
    table.add_row("first loss", fmt(result["first_loss"], ".4f"))
    table.add_row("final loss", fmt(result["final_loss"], ".4f"))
    table.add_row("mean anomaly probability", fmt(result["mean_anomaly"], ".3f"))
    table.add_row("anomaly rate (batches > 0.5)", fmt(result["anomaly_rate"], ".1%"))
    table.add_row("time", fmt(result["seconds"], ".1f") + " s")
    table.add_row("samples/s", fmt(result["samples_per_second"], ".1f"))
    table.add_row(
        "trend (server, last 20 batches)", TRENDS.get(result["trend"], str(result["trend"]))
    )
    table.add_row("feedback success rate", fmt(result["feedback_rate"], ".1%"))
    table.add_row(
        f"held-out ROC-AUC ({result['holdout_samples']} samples)", fmt(result["roc_auc"], ".3f")
    )
    if result["until_loss"] is not None:
        table.add_row(
            f"loss <= {result['until_loss']}", "yes" if result["reached_target"] else "no"
        )
    Console().print(table)


def width_error(expected: int, got: int, source: str) -> InvalidDataError:
    """The server's words for a wrong width, naming the data; raised before any upload."""
    error = dimension_mismatch(expected, got)
    return InvalidDataError(f"{error.message} ({source})", error_type=error.error_type.value)


def split_holdout(
    dataset: Dataset, holdout: float, seed: int, *, quiet: bool
) -> tuple[Dataset, Dataset | None]:
    """Hold out a share for ROC-AUC, unless there is too little data to split."""
    if not holdout:
        return dataset, None
    if not 0 < round(holdout * len(dataset)) < len(dataset):
        if not quiet:
            count = "1 sample" if len(dataset) == 1 else f"{len(dataset)} samples"
            console.print(f"Only {count}: training on all, none held out.")
        return dataset, None
    return split(dataset, holdout, seed=seed)
