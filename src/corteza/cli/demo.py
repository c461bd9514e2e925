"""``corteza demo``: synthetic data, a local server, training with progress, a summary."""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from corteza.client import Client, CortezaError, LocalServer, make_dataset
from corteza.client.fit import BatchReport, FitSummary, fit

logger = logging.getLogger(__name__)
console = Console(stderr=True)


def demo(
    server: str | None = typer.Option(
        None, help="Train on this server instead of starting a local one."
    ),
    preset: str = typer.Option("default", help="Model size of the local server: default, tiny."),
    samples: int = typer.Option(640, help="Synthetic samples to generate."),
    epochs: int = typer.Option(1, help="Passes over the data."),
    batch_size: int = typer.Option(32, help="Samples per batch."),
    recipe: str = typer.Option("sensor", help="Synthetic recipe: sensor or seed."),
    lr: float = typer.Option(1e-4, help="Learning rate of the local server."),
    seed: int = typer.Option(0, help="Seed for the data, its order and the model."),
    feedback_every: int = typer.Option(5, help="Send dendritic feedback every N batches."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON result, no progress."),
) -> None:
    """Train on synthetic sensor data through the seed's JSON API and print a summary."""
    try:
        with ExitStack() as stack:
            url = server
            if url is None:
                if not as_json:
                    console.print(f"Starting a local server ([bold]{preset}[/] model)...")
                local = stack.enter_context(
                    LocalServer(["--preset", preset, "--lr", str(lr), "--seed", str(seed)])
                )
                url = local.url
            client = stack.enter_context(Client(url))
            info = client.info()
            data = make_dataset(samples, input_dim=info.input_dim, recipe=recipe, seed=seed)
            if not as_json:
                console.print(
                    f"Server {url}: {info.arquitectura.parametros_totales:,} parameters, "
                    f"{client.status().estadisticas.dispositivo}; {len(data)} samples "
                    f"({recipe} recipe), {epochs} epoch(s) of batch {batch_size}"
                )
            summary = _train(client, data.X, data.y, epochs, batch_size, seed, feedback_every,
                             quiet=as_json)  # fmt: skip
            metrics = client.metrics()
    except (CortezaError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    result: dict[str, object] = {
        "samples": summary.samples,
        "batches": summary.batches,
        "final_loss": summary.final_loss,
        "first_loss": summary.losses[0] if summary.losses else None,
        "mean_anomaly": summary.mean_anomaly,
        "anomaly_rate": summary.anomaly_rate,
        "seconds": summary.seconds,
        "samples_per_second": summary.samples_per_second,
        "trend": metrics.tendencia,
        "feedback_rate": metrics.feedback_tasa_exito,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _print_summary(result)


def _train(
    client: Client, X: object, y: object, epochs: int, batch_size: int, seed: int,
    feedback_every: int, *, quiet: bool,
) -> FitSummary:  # fmt: skip
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
        task = progress.add_task("train", total=None, loss=float("nan"), prob=0.0, rate=0.0)

        def on_batch(report: BatchReport) -> None:
            progress.update(
                task,
                completed=report.index,
                total=report.total,
                loss=report.response.loss,
                prob=report.response.outputs.anomaly_prob,
                rate=report.samples / report.elapsed if report.elapsed else 0.0,
            )

        return fit(
            client, X, y,  # type: ignore[arg-type]
            epochs=epochs, batch_size=batch_size, seed=seed, feedback_every=feedback_every,
            on_batch=on_batch,
        )  # fmt: skip


def _print_summary(result: dict[str, object]) -> None:
    table = Table(title="Training summary", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")

    def fmt(value: object, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    table.add_row("samples", str(result["samples"]))
    table.add_row("batches", str(result["batches"]))
    table.add_row("first loss", fmt(result["first_loss"], ".4f"))
    table.add_row("final loss", fmt(result["final_loss"], ".4f"))
    table.add_row("mean anomaly probability", fmt(result["mean_anomaly"], ".3f"))
    table.add_row("anomaly rate (batches > 0.5)", fmt(result["anomaly_rate"], ".1%"))
    table.add_row("time", fmt(result["seconds"], ".1f") + " s")
    table.add_row("samples/s", fmt(result["samples_per_second"], ".1f"))
    table.add_row("server trend", str(result["trend"]))
    table.add_row("feedback success rate", fmt(result["feedback_rate"], ".1%"))
    Console().print(table)
