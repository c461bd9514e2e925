"""``corteza make-data``: write a synthetic dataset to a file, to train on or to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corteza.cli.common import EXIT_BAD_INPUT, clear_errors, fail
from corteza.client.data.datasets import save_dataset
from corteza.client.data.synthetic import DEFAULT_ANOMALY_RATE, DEFAULT_RECIPE, make_dataset
from corteza.wire.model_config import PRESETS

DEFAULT_INPUT_DIM = PRESETS["default"].input_dim


def make_data(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="File to write: .npz, .npy, .csv or .json.")
    ],
    samples: Annotated[int, typer.Option(help="Number of samples.")] = 2000,
    recipe: Annotated[str, typer.Option(help="Synthetic recipe: sensor or seed.")] = DEFAULT_RECIPE,
    input_dim: Annotated[int, typer.Option(help="Values per sample.")] = DEFAULT_INPUT_DIM,
    anomaly_rate: Annotated[
        float, typer.Option(help="Expected share of anomalies.")
    ] = DEFAULT_ANOMALY_RATE,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same data.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite PATH if it exists.")] = False,
) -> None:
    """Write a synthetic dataset (samples and 0/1 anomaly labels) to PATH."""
    if path.exists() and not force:
        fail(f"{path} exists: pass --force to overwrite it", EXIT_BAD_INPUT)
    with clear_errors(debug=False):
        data = make_dataset(
            samples, input_dim=input_dim, recipe=recipe, anomaly_rate=anomaly_rate, seed=seed
        )
        save_dataset(data, path)
    anomalies = int(data.y.sum())
    typer.echo(
        f"Wrote {len(data)} samples of {input_dim} values ({recipe} recipe, "
        f"{anomalies} anomalies, seed {seed}) to {path}"
    )
