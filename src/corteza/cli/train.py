"""``corteza train DATA`` and ``corteza demo``: train through a server, then summarise."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from corteza.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_TARGET_MISSED,
    DebugOption,
    JsonOption,
    ServerOption,
    TokenOption,
    clear_errors,
    console,
    fail,
    print_json,
    target,
)
from corteza.cli.interrupts import report_interrupted, sigterm_as_interrupt
from corteza.cli.on_server import LrScheduleOption, OnServerOption, PatienceOption, train_on_server
from corteza.cli.resume import forget, remember, run_for
from corteza.cli.training import (
    RunOptions,
    print_summary,
    run,
    server_for,
    split_holdout,
    width_error,
)
from corteza.client import Client, InvalidDataError
from corteza.client.data.datasets import Dataset, open_dataset
from corteza.client.data.plots import (
    LossHistory,
    TensorBoardScalars,
    missing_extra,
    plot_formats,
    save_loss_plot,
)
from corteza.client.data.synthetic import RECIPES, make_dataset
from corteza.client.training.progress import BatchReport
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
    None,
    help="Stop once the mean loss of the last 5 batches is at or below X (0 or more); "
    "exit 3 if never.",
)
HoldoutOption = typer.Option(0.2, min=0.0, max=0.9, help="Share of samples held out for ROC-AUC.")
SeedOption = typer.Option(0, help="Seed of the split, the batch order and the local model.")
PresetOption = typer.Option(
    "default",
    help=f"Model of the local server: {' or '.join(PRESETS)} (a --server keeps its own).",
)
LrOption = typer.Option(1e-4, help="Learning rate of the local server (a --server keeps its own).")
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
    on_server: bool = OnServerOption,
    lr_schedule: str = LrScheduleOption,
    patience: int | None = PatienceOption,
    restart: bool = typer.Option(
        False,
        "--restart",
        help="Start a new run even if this command was interrupted on this server before "
        "(without it, the interrupted run resumes where it stopped).",
    ),
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Train the model on DATA through a server (a local one if none is configured).

    Ctrl-C (or SIGTERM) stops it: it says at which batch, stops a local server, and
    exits 130 (with --json, a result with "interrupted": true). The same command
    against the same server then resumes the run, unless --restart. With --on-server the
    server trains it as a job (corteza jobs); Ctrl-C then detaches.
    """
    _check_options(until_loss, preset, as_json)
    if on_server:
        options = RunOptions(epochs, batch_size, seed, feedback_every, until_loss)
        schedule = (lr_schedule, patience)
        return train_on_server(data, server, token, options, holdout, schedule, as_json, debug)
    curves = Curves(plot, tensorboard_dir)
    curves.check()
    with clear_errors(debug, as_json=as_json):
        chosen = target(server)
    url = None if chosen.origin is None else chosen.url
    note = _local_only(url, preset != "default" or lr != LOCAL_LR["train"])
    with clear_errors(debug, as_json=as_json, server=chosen):
        dataset = open_dataset(data)
        shape = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "holdout": holdout}
        key, run_id = run_for(data, url, shape, restart=restart, quiet=as_json)
        _train_and_report(
            dataset,
            str(data),
            url,
            token,
            holdout,
            RunOptions(
                epochs, batch_size, seed, feedback_every, until_loss, stream, window, run_id
            ),
            _local_args(preset, lr, seed, dataset.input_dim),
            as_json,
            curves,
            note,
            key,
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
    lr: float = typer.Option(
        3e-4,
        help="Learning rate of the local server: higher than train's 1e-4, so a two-epoch "
        "demo learns (a --server keeps its own).",
    ),
    stream: bool = StreamOption,
    window: int = WindowOption,
    plot: Path | None = PlotOption,
    tensorboard_dir: Path | None = TensorBoardOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Train on synthetic sensor data: a local server, progress, a summary."""
    if recipe not in RECIPES:
        fail(
            f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}",
            EXIT_BAD_INPUT,
            as_json=as_json,
            error_type="invalid_option",
        )
    _check_options(until_loss, preset, as_json)
    curves = Curves(plot, tensorboard_dir)
    curves.check()
    with clear_errors(debug, as_json=as_json):
        chosen = target(server)
    url = None if chosen.origin is None else chosen.url
    note = _local_only(url, preset != "default" or lr != LOCAL_LR["demo"])
    local_args = ["--preset", preset, "--lr", str(lr), "--seed", str(seed)]
    with clear_errors(debug, as_json=as_json, server=chosen):
        input_dim = _remote_input_dim(url, token) if url else PRESETS[preset].input_dim
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
            note,
        )


LOCAL_LR = {"train": 1e-4, "demo": 3e-4}  # the defaults of --lr


def _check_options(until_loss: float | None, preset: str, as_json: bool) -> None:
    """Refuse, before anything starts, what the local server would refuse later."""
    if until_loss is not None and until_loss < 0:
        fail(
            f"--until-loss must be 0 or more (a loss is never negative), got {until_loss:g}",
            EXIT_BAD_INPUT,
            as_json=as_json,
            error_type="invalid_option",
        )
    if preset not in PRESETS:
        fail(
            f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}",
            EXIT_BAD_INPUT,
            as_json=as_json,
            error_type="invalid_option",
        )


def _local_only(url: str | None, given: bool) -> str | None:
    """The warning for options the user gave that do nothing on ``url``; said once it answers."""
    if url is None or not given:
        return None
    return (
        f"[yellow]note:[/] --preset and --lr set up a local server only; "
        f"{escape(url)} keeps its own model and learning rate"
    )


def _local_args(preset: str, lr: float, seed: int, input_dim: int) -> list[str]:
    """The local server's options; its width follows the data's when the preset's differs
    (said by :func:`server_for` once a local server starts)."""
    args = ["--preset", preset, "--lr", str(lr), "--seed", str(seed)]
    if input_dim != PRESETS[preset].input_dim:
        args += ["--input-dim", str(input_dim)]
    return args


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
    note: str | None = None,
    resume_key: str | None = None,
) -> None:
    try:
        result = _train(
            dataset, source, url, token, holdout, options, local_args, as_json, curves, note
        )
    except KeyboardInterrupt:  # before the first batch or after the last: nothing to report
        fail("interrupted", EXIT_INTERRUPTED, as_json=as_json, error_type="interrupted")
    if result["interrupted"]:
        if resume_key is not None and options.run_id is not None:
            remember(resume_key, options.run_id)
        report_interrupted(result, as_json, local=url is None, resumable=resume_key is not None)
    if resume_key is not None:
        forget(resume_key)
    if as_json:
        print_json(result)
    else:
        print_summary(result)
    if options.until_loss is not None and not result["reached_target"]:
        raise typer.Exit(EXIT_TARGET_MISSED)


def _train(
    dataset: Dataset,
    source: str,
    url: str | None,
    token: str | None,
    holdout: float,
    options: RunOptions,
    local_args: list[str],
    as_json: bool,
    curves: Curves,
    note: str | None,
) -> dict[str, Any]:
    """The run through a server (started here when local), stopped on Ctrl-C or SIGTERM."""
    with (
        sigterm_as_interrupt(),
        server_for(url, local_args, quiet=as_json) as base,
        Client(base, token=token) as client,
    ):
        info = client.info()
        if note is not None:  # the server answered: now the note is worth a line
            _say(note)
        if dataset.input_dim != info.input_dim:
            raise width_error(info.input_dim, dataset.input_dim, source)
        if info.limits is not None and options.batch_size > info.limits.max_batch_samples:
            raise InvalidDataError(
                f"--batch-size {options.batch_size} exceeds this server's "
                f"{info.limits.max_batch_samples} samples per batch (its --max-batch-samples)",
                error_type="batch_too_large",
            )
        train_part, held = split_holdout(dataset, holdout, options.seed, quiet=as_json)
        if not as_json:
            console.print(
                f"Server {base}: {info.arquitectura.parametros_totales:,} parameters on "
                f"{client.status().estadisticas.dispositivo}. Data: {source}, "
                f"{len(train_part)} to train, {0 if held is None else len(held)} held out; "
                f"{options.epochs} epoch(s) of batch {options.batch_size}.",
                soft_wrap=True,  # one line in a log too, not cut at 80 columns
            )
        with _recording(curves, f"Training loss: {source}", quiet=as_json) as on_batch:
            return run(client, train_part, held, options, quiet=as_json, on_batch=on_batch)


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
