"""``corteza train DATA`` and ``corteza demo``: train through a server, then summarise."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.markup import escape

from corteza.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_TARGET_MISSED,
    DebugOption,
    JsonOption,
    ServerOption,
    TokenOption,
    clear_errors,
    console,
    fail,
    print_json,
    server_url,
)
from corteza.cli.training import RunOptions, print_summary, run, server_for
from corteza.client import Client, InvalidDataError
from corteza.client.data.datasets import Dataset, open_dataset, split
from corteza.client.data.plots import (
    LossHistory,
    TensorBoardScalars,
    missing_extra,
    plot_formats,
    save_loss_plot,
)
from corteza.client.data.synthetic import RECIPES, make_dataset
from corteza.client.training.progress import BatchReport
from corteza.wire import dimension_mismatch
from corteza.wire.model_config import PRESETS

EpochsOption = typer.Option(1, min=1, help="Passes over the data.")
BatchOption = typer.Option(32, min=1, help="Samples per batch.")
FeedbackOption = typer.Option(
    5,
    min=0,
    help="Send dendritic feedback every N batches (0: never); validated when the "
    "loss improved since the last feedback.",
)
UntilOption = typer.Option(
    None, help="Stop once the mean loss of the last 5 batches is at or below X; exit 3 if never."
)
HoldoutOption = typer.Option(0.2, min=0.0, max=0.9, help="Share of samples held out for ROC-AUC.")
SeedOption = typer.Option(0, help="Seed of the split, the batch order and the local model.")
PresetOption = typer.Option("default", help=f"Model of the local server: {' or '.join(PRESETS)}.")
LrOption = typer.Option(1e-4, help="Learning rate of the local server.")
WindowOption = typer.Option(4, min=1, max=256, help="Batches in flight on the stream.")
StreamOption = typer.Option(
    True,
    "--stream/--no-stream",
    help="Stream batches over a WebSocket, a few in flight "
    "(default); --no-stream sends one request per batch.",
)
PlotOption = typer.Option(
    None,
    "--plot",
    help="Save the loss curve to this image (.png, .svg, .pdf...) when training "
    "ends or stops; needs pip install 'corteza[plot]'.",
)
TensorBoardOption = typer.Option(
    None,
    "--tensorboard-dir",
    help="Write loss and samples/s per batch here for TensorBoard; "
    "needs pip install 'corteza[tensorboard]'.",
)


@dataclass(frozen=True)
class Curves:
    """Where the run's loss curve goes: an image, TensorBoard scalars, both or neither."""

    plot: Path | None = None
    tensorboard_dir: Path | None = None

    def check(self) -> None:
        """Refuse, before any training, what could not be written at the end."""
        if self.plot is not None:
            problem = missing_extra("matplotlib")
            if problem is None and self.plot.suffix.lstrip(".").lower() not in plot_formats():
                problem = (
                    f"--plot cannot write {self.plot.suffix or 'a file without a suffix'}: "
                    "name a .png, .svg or .pdf file"
                )
            if problem:
                fail(problem, EXIT_BAD_INPUT)
        if self.tensorboard_dir is not None and (problem := missing_extra("tensorboardX")):
            fail(problem, EXIT_BAD_INPUT)


def train(
    data: Path = typer.Argument(..., help="Data file: .json (the seed's), .npz, .npy or .csv."),
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    epochs: int = EpochsOption,
    batch_size: int = BatchOption,
    feedback_every: int = FeedbackOption,
    until_loss: float | None = UntilOption,
    holdout: float = HoldoutOption,
    seed: int = SeedOption,
    preset: str = PresetOption,
    lr: float = LrOption,
    stream: bool = StreamOption,
    window: int = WindowOption,
    plot: Path | None = PlotOption,
    tensorboard_dir: Path | None = TensorBoardOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Train the model on DATA through a server (a local one if none is configured)."""
    curves = Curves(plot, tensorboard_dir)
    curves.check()
    with clear_errors(debug):
        dataset = open_dataset(data)
        _train_and_report(
            dataset,
            str(data),
            server_url(server),
            token,
            holdout,
            RunOptions(epochs, batch_size, seed, feedback_every, until_loss, stream, window),
            ["--preset", preset, "--lr", str(lr), "--seed", str(seed)],
            as_json,
            curves,
        )


def demo(
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    samples: int = typer.Option(2000, min=10, help="Synthetic samples to generate."),
    recipe: str = typer.Option("sensor", help=f"Synthetic recipe: {', '.join(RECIPES)}."),
    epochs: int = typer.Option(2, min=1, help="Passes over the data."),
    batch_size: int = BatchOption,
    feedback_every: int = FeedbackOption,
    until_loss: float | None = UntilOption,
    holdout: float = HoldoutOption,
    seed: int = SeedOption,
    preset: str = PresetOption,
    lr: float = typer.Option(3e-4, help="Learning rate of the local server."),
    stream: bool = StreamOption,
    window: int = WindowOption,
    plot: Path | None = PlotOption,
    tensorboard_dir: Path | None = TensorBoardOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Train on synthetic sensor data: a local server, progress, a summary."""
    if recipe not in RECIPES:
        fail(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}", EXIT_BAD_INPUT)
    curves = Curves(plot, tensorboard_dir)
    curves.check()
    url = server_url(server)
    local_args = ["--preset", preset, "--lr", str(lr), "--seed", str(seed)]
    with clear_errors(debug):
        local = PRESETS.get(preset, PRESETS["default"])  # an unknown preset fails in the server
        input_dim = _remote_input_dim(url, token) if url else local.input_dim
        dataset = make_dataset(samples, input_dim=input_dim, recipe=recipe, seed=seed)
        _train_and_report(
            dataset,
            f"{samples} synthetic samples ({recipe} recipe)",
            url,
            token,
            holdout,
            RunOptions(epochs, batch_size, seed, feedback_every, until_loss, stream, window),
            local_args,
            as_json,
            curves,
        )


def _remote_input_dim(url: str, token: str | None) -> int:
    with Client(url, token=token) as client:
        return client.input_dim()


def _train_and_report(
    dataset: Dataset,
    source: str,
    url: str | None,
    token: str | None,
    holdout: float,
    options: RunOptions,
    local_args: list[str],
    as_json: bool,
    curves: Curves,
) -> None:
    with server_for(url, local_args, quiet=as_json) as base, Client(base, token=token) as client:
        info = client.info()
        if dataset.input_dim != info.input_dim:
            raise _width_error(info.input_dim, dataset.input_dim, source)
        train_part, held = _split(dataset, holdout, options.seed, quiet=as_json)
        if not as_json:
            console.print(
                f"Server {base}: {info.arquitectura.parametros_totales:,} parameters on "
                f"{client.status().estadisticas.dispositivo}. Data: {source}, "
                f"{len(train_part)} to train, {0 if held is None else len(held)} held out; "
                f"{options.epochs} epoch(s) of batch {options.batch_size}.",
                soft_wrap=True,  # one line in a log too, not cut at 80 columns
            )
        with _recording(curves, f"Training loss: {source}", quiet=as_json) as on_batch:
            result = run(client, train_part, held, options, quiet=as_json, on_batch=on_batch)
    if as_json:
        print_json(result)
    else:
        print_summary(result)
    if options.until_loss is not None and not result["reached_target"]:
        raise typer.Exit(EXIT_TARGET_MISSED)


@contextmanager
def _recording(
    curves: Curves, title: str, *, quiet: bool
) -> Iterator[Callable[[BatchReport], None] | None]:
    """The batch callback feeding ``curves``; the plot is saved even when training stops early."""
    if curves.plot is None and curves.tensorboard_dir is None:
        yield None
        return
    history = LossHistory()
    board = None if curves.tensorboard_dir is None else TensorBoardScalars(curves.tensorboard_dir)

    def record(report: BatchReport) -> None:
        history.record(report)
        if board is not None:
            board.record(report)

    try:
        yield record
    finally:
        if board is not None:
            board.close()
            if not quiet:
                _say(f"TensorBoard scalars written to {escape(str(board.logdir))}")
        if curves.plot is not None and len(history):
            try:
                save_loss_plot(history, curves.plot, title=title)
            except OSError as exc:
                _say(f"[red]error:[/] cannot save the loss plot: {escape(str(exc))}")
            else:
                if not quiet:
                    _say(f"Loss plot of {len(history)} batches saved to {escape(str(curves.plot))}")


def _say(markup: str) -> None:
    console.print(markup, highlight=False, soft_wrap=True)


def _width_error(expected: int, got: int, source: str) -> InvalidDataError:
    """The server's words for a wrong width, naming the data; raised before any upload."""
    error = dimension_mismatch(expected, got)
    return InvalidDataError(f"{error.message} ({source})", error_type=error.error_type.value)


def _split(
    dataset: Dataset, holdout: float, seed: int, *, quiet: bool
) -> tuple[Dataset, Dataset | None]:
    """Hold out a share for ROC-AUC, unless there is too little data to split."""
    if not holdout:
        return dataset, None
    if not 0 < round(holdout * len(dataset)) < len(dataset):
        if not quiet:
            console.print(f"Only {len(dataset)} samples: training on all, none held out.")
        return dataset, None
    return split(dataset, holdout, seed=seed)
