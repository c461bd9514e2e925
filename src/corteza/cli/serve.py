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


class WebhookFormat(str, Enum):
    json = "json"
    slack = "slack"


class TunnelChoice(str, Enum):
    none = "none"
    cloudflared = "cloudflared"
    ngrok = "ngrok"


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
    webhook: list[str] | None = typer.Option(
        None,
        help="http(s) URL told of new best losses, checkpoints, finished runs and stalls "
        "(repeatable).",
    ),
    webhook_secret: str | None = typer.Option(
        None,
        envvar="CORTEZA_WEBHOOK_SECRET",
        show_envvar=True,
        help="Sign deliveries with HMAC-SHA256 (X-Corteza-Signature).",
    ),
    webhook_format: WebhookFormat = typer.Option(
        WebhookFormat.json, help="json (the event) or slack ({'text': one line})."
    ),
    notify_loss_below: float | None = typer.Option(
        None, help="Announce when the loss first drops below this."
    ),
    notify_margin: float = typer.Option(
        0.01, min=0.0, max=0.99, help="Announce a best loss this much (relative) below the last."
    ),
    stall_minutes: float = typer.Option(
        10.0, min=0.001, help="Announce a stall after this long without a batch."
    ),
    token: str | None = typer.Option(
        None,
        envvar="CORTEZA_TOKEN",
        show_envvar=True,
        help="Bearer token to require (generated when the server is reachable beyond loopback).",
    ),
    no_auth: bool = typer.Option(False, "--no-auth", help="No token, on a loopback address only."),
    allowed_host: list[str] | None = typer.Option(
        None, help="Host name clients use to reach this server (repeatable), e.g. a LAN name."
    ),
    cors_origin: list[str] | None = typer.Option(
        None, help="Web page origin allowed to call this server (repeatable), e.g. https://x.y."
    ),
    max_body_mb: float | None = typer.Option(None, help="Body cap of batches (default 64)."),
    max_small_body_kb: float | None = typer.Option(
        None, help="Body cap of every other route (default 1024)."
    ),
    max_batch_samples: int | None = typer.Option(None, help="Samples per batch (default 4096)."),
    max_seq_len: int | None = typer.Option(None, help="Time steps per sample (default 1024)."),
    max_connections: int | None = typer.Option(
        None, help="Connections served at once; more get 503 (default 64)."
    ),
    tunnel: TunnelChoice = typer.Option(
        TunnelChoice.none,
        help="Public https URL: cloudflared (no account) or ngrok (needs NGROK_AUTHTOKEN).",
    ),
) -> None:
    """Run the training server (the seed's routes plus /docs)."""
    # Imported here so the light, torch-free install can still run the other commands.
    from corteza.model import PRESETS, ModelConfig
    from corteza.server import Settings
    from corteza.server.edge.policy import (
        SecurityConfigError,
        banner_lines,
        resolve_token,
        server_url,
    )
    from corteza.server.launch.tunnel import TunnelError
    from corteza.server.launch.tunnel import serve as serve_forever

    try:
        token = resolve_token(
            host, tunnel=tunnel is not TunnelChoice.none, token=token, no_auth=no_auth
        )
    except SecurityConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    setup_logging(log_level)
    limits: dict[str, Any] = {
        "max_body_mb": max_body_mb,
        "max_small_body_kb": max_small_body_kb,
        "max_batch_samples": max_batch_samples,
        "max_seq_len": max_seq_len,
        "max_connections": max_connections,
    }
    widths: dict[str, Any] = {
        "input_dim": input_dim,
        "lstm_hidden": lstm_hidden,
        "lstm_layers": lstm_layers,
        "transformer_heads": transformer_heads,
        "transformer_layers": transformer_layers,
        "transformer_ff": transformer_ff,
        "gmu_hidden": gmu_hidden,
        "mlp_hidden": mlp_hidden,
        "mlp_out": mlp_out,
        "attention_heads": attention_heads,
        "attention_ff": attention_ff,
        "head_hidden": head_hidden,
        "dropout": dropout,
    }
    base = PRESETS[preset.value].to_dict()
    base.update({k: v for k, v in widths.items() if v is not None})
    try:
        model = ModelConfig.from_dict(base)
        settings = Settings(
            host=host,
            port=port,
            device=device,
            seed=seed,
            lr=lr,
            log_level=log_level,
            model=model,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
            checkpoint_keep=keep_checkpoints,
            token=token,
            allowed_hosts=allowed_host or [],
            cors_origins=cors_origin or [],
            public=tunnel is not TunnelChoice.none,
            **{k: v for k, v in limits.items() if v is not None},
            webhooks=webhook or [],
            webhook_secret=webhook_secret,
            webhook_format=webhook_format.value,
            notify_loss_below=notify_loss_below,
            notify_margin=notify_margin,
            stall_minutes=stall_minutes,
        )
    except ValueError as exc:
        typer.echo(f"error: {_first_line(exc)}", err=True)
        raise typer.Exit(2) from exc
    logger.info("serving on %s:%d, auth %s", host, port, "on" if token else "off")

    def ready(public_url: str | None) -> None:
        """Once the model is up (and the tunnel open): the URL, the token, what to paste."""
        print_lines(banner_lines(public_url or server_url(host, port), token))

    try:
        serve_forever(settings, tunnel.value, ready)
    except TunnelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def print_lines(lines: list[str]) -> None:
    """Print the start banner one line at a time, flushed: a pipe reader sees it at once."""
    for line in lines:
        print(line, flush=True)


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
