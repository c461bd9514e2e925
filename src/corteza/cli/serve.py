"""``corteza serve``: run the training server on this machine."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from corteza.cli.logs import setup_logging

logger = logging.getLogger(__name__)


class Preset(str, Enum):
    default = "default"
    tiny = "tiny"


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="TCP port."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    seed: int = typer.Option(0, help="Seed for the model's initial weights and dropout."),
    lr: float = typer.Option(1e-4, help="AdamW learning rate."),
    preset: Preset = typer.Option(Preset.default, help="Model size to start from."),
    input_dim: int | None = typer.Option(None, help="Input width D (default 1600)."),
    lstm_hidden: int | None = typer.Option(None, help="BiLSTM hidden units per direction."),
    lstm_layers: int | None = typer.Option(None, help="BiLSTM layers."),
    transformer_heads: int | None = typer.Option(None, help="Transformer attention heads."),
    transformer_layers: int | None = typer.Option(None, help="Transformer encoder layers."),
    transformer_ff: int | None = typer.Option(None, help="Transformer feed-forward width."),
    gmu_hidden: int | None = typer.Option(None, help="GMU gate hidden width."),
    mlp_hidden: tuple[int, int] | None = typer.Option(None, help="Capa3 hidden widths (two)."),
    mlp_out: int | None = typer.Option(None, help="Capa3 output width."),
    attention_heads: int | None = typer.Option(None, help="Capa4 attention heads."),
    attention_ff: int | None = typer.Option(None, help="Capa4 feed-forward width."),
    head_hidden: int | None = typer.Option(None, help="Capa5 head hidden width."),
    dropout: float | None = typer.Option(None, help="Dropout rate."),
    checkpoint_dir: Path | None = typer.Option(
        None, help="Save checkpoints here and resume from the newest on start (e.g. Google Drive)."
    ),
    checkpoint_every: int = typer.Option(1000, min=1, help="Batches between checkpoints."),
    checkpoint_seconds: float = typer.Option(
        120.0, min=1.0, help="Seconds between checkpoints (whichever comes first)."
    ),
    keep_checkpoints: int = typer.Option(3, min=1, help="Checkpoints kept."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
) -> None:
    """Run the training server (the seed's routes plus /docs)."""
    # Imported here so the light, torch-free install can still run the other commands.
    import uvicorn

    from corteza.model import PRESETS, ModelConfig
    from corteza.server import Settings, create_app

    setup_logging(log_level)
    widths: dict[str, Any] = {
        "input_dim": input_dim, "lstm_hidden": lstm_hidden, "lstm_layers": lstm_layers,
        "transformer_heads": transformer_heads, "transformer_layers": transformer_layers,
        "transformer_ff": transformer_ff, "gmu_hidden": gmu_hidden, "mlp_hidden": mlp_hidden,
        "mlp_out": mlp_out, "attention_heads": attention_heads, "attention_ff": attention_ff,
        "head_hidden": head_hidden, "dropout": dropout,
    }  # fmt: skip
    base = PRESETS[preset.value].to_dict()
    base.update({k: v for k, v in widths.items() if v is not None})
    try:
        model = ModelConfig.from_dict(base)
        settings = Settings(
            host=host, port=port, device=device, seed=seed, lr=lr, log_level=log_level,
            model=model, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds, checkpoint_keep=keep_checkpoints,
        )  # fmt: skip
    except ValueError as exc:
        typer.echo(f"error: {_first_line(exc)}", err=True)
        raise typer.Exit(2) from exc
    logger.info("corteza server on http://%s:%d (docs at /docs)", host, port)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=30,
    )


def _first_line(exc: ValueError) -> str:
    """The human part of a ValueError (pydantic adds a report under it)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(
            ".".join(str(p) for p in e["loc"] if p != "model")
            + (": " if any(p != "model" for p in e["loc"]) else "")
            + str(e["msg"]).removeprefix("Value error, ")
            for e in errors()
        )
    return str(exc)
