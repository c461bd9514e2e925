"""``corteza serve`` itself: its options are the server's ``Settings`` fields.

Each option that sets a ``Settings`` field takes that field's default, its
inclusive bounds (``ge``/``le``, checked by click and shown as ``[x>=1]``) and,
unless the command line needs other words, its description as help; exclusive
bounds (``gt``/``lt``) are shown as ``(x>0)`` and checked by ``Settings``. This
module imports the server, so :mod:`corteza.cli.serve` imports it only when the
command runs.
"""

from __future__ import annotations

import logging
import os
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from corteza.cli.common import Command
from corteza.cli.logs import setup_logging
from corteza.cli.serve_checks import startup_problem
from corteza.model import PRESETS, ModelConfig
from corteza.server.distributed import launch as torchrun
from corteza.server.distributed.follower import follow
from corteza.server.distributed.group import DistributedSetupError, join, world_size_from_env
from corteza.server.edge.policy import (
    SecurityConfigError,
    allows_any_page,
    banner_lines,
    resolve_token,
    server_url,
)
from corteza.server.launch.server import serve as serve_forever
from corteza.server.launch.tunnel import TunnelError
from corteza.server.settings import Settings

logger = logging.getLogger(__name__)

FIELDS = Settings.model_fields


class Preset(str, Enum):
    default = "default"
    tiny = "tiny"


class WebhookFormat(str, Enum):  # the choices of Settings.webhook_format
    json = "json"
    slack = "slack"


class PrecisionChoice(str, Enum):  # the choices of Settings.precision
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class CompileMode(str, Enum):  # the choices of Settings.compile_mode
    default = "default"
    reduce_overhead = "reduce-overhead"
    max_autotune = "max-autotune"
    max_autotune_no_cudagraphs = "max-autotune-no-cudagraphs"


class TunnelChoice(str, Enum):
    none = "none"
    cloudflared = "cloudflared"
    ngrok = "ngrok"


def setting(name: str, *param_decls: str, help: str | None = None, **kwargs: Any) -> Any:
    """A typer option for ``Settings.<name>``: its default, bounds and description."""
    field = FIELDS[name]
    default = field.get_default(call_default_factory=True)
    if isinstance(default, list) and not default:
        default = None  # typer's way to say "repeatable, none given"
    exclusive: list[str] = []
    for bound in field.metadata:  # annotated_types.Ge, Le, Gt, Lt
        if getattr(bound, "ge", None) is not None:
            kwargs.setdefault("min", bound.ge)
        if getattr(bound, "le", None) is not None:
            kwargs.setdefault("max", bound.le)
        if getattr(bound, "gt", None) is not None:
            exclusive.append(f"x>{bound.gt:g}")
        if getattr(bound, "lt", None) is not None:
            exclusive.append(f"x<{bound.lt:g}")
    text = field.description or name.replace("_", " ")
    if exclusive:  # in parentheses: rich help reads [x>0] as markup
        text = f"{text} ({', '.join(exclusive)})"
    text = help or f"{text[:1].upper()}{text[1:]}."
    return typer.Option(default, *param_decls, help=text, **kwargs)


def serve(
    ctx: typer.Context,
    host: str = setting("host"),
    port: int = setting("port"),
    device: str = setting("device"),
    seed: int = setting("seed", help="Seed for the model's initial weights and dropout."),
    lr: float = setting("lr"),
    precision: PrecisionChoice = setting("precision"),
    compile: bool = setting("compile", "--compile"),
    compile_mode: CompileMode = setting("compile_mode"),
    preset: Preset = typer.Option(Preset.default, help="Model size to start from."),
    # The model's widths: each overrides the preset's.
    input_dim: int | None = typer.Option(
        None, help=f"Input width D (default {ModelConfig.input_dim})."
    ),
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
    checkpoint_dir: Path | None = setting("checkpoint_dir"),
    checkpoint_every: int = setting("checkpoint_every"),
    checkpoint_seconds: float = setting("checkpoint_seconds"),
    checkpoint_keep: int = setting("checkpoint_keep", "--keep-checkpoints"),
    data_dir: Path | None = setting("data_dir"),
    max_data_gb: float = setting("max_data_gb"),
    log_level: str = setting("log_level"),
    webhooks: list[str] | None = setting(
        "webhooks",
        "--webhook",
        help="http(s) URL told of new best losses, checkpoints, finished runs and stalls "
        "(repeatable).",
    ),
    webhook_secret: str | None = setting(
        "webhook_secret", envvar="CORTEZA_WEBHOOK_SECRET", show_envvar=True
    ),
    webhook_format: WebhookFormat = setting("webhook_format"),
    notify_loss_below: float | None = setting("notify_loss_below"),
    notify_margin: float = setting("notify_margin"),
    stall_minutes: float = setting("stall_minutes"),
    token: str | None = setting(
        "token",
        envvar="CORTEZA_TOKEN",
        show_envvar=True,
        help="Bearer token to require (generated when the server is reachable beyond loopback).",
    ),
    no_auth: bool = typer.Option(False, "--no-auth", help="No token, on a loopback address only."),
    allowed_hosts: list[str] | None = setting(
        "allowed_hosts",
        "--allowed-host",
        help="Host name clients use to reach this server (repeatable), e.g. a LAN name.",
    ),
    cors_origins: list[str] | None = setting(
        "cors_origins",
        "--cors-origin",
        help="Web page origin allowed to call this server (repeatable), e.g. https://x.y; "
        "'*' (every page) generates a token.",
    ),
    max_body_mb: float = setting("max_body_mb"),
    max_small_body_kb: float = setting("max_small_body_kb"),
    max_batch_samples: int = setting("max_batch_samples"),
    max_seq_len: int = setting("max_seq_len"),
    max_connections: int = setting("max_connections"),
    tunnel: TunnelChoice = typer.Option(
        TunnelChoice.none,
        help="Public https URL: cloudflared (no account) or ngrok (needs NGROK_AUTHTOKEN).",
    ),
    nproc_per_node: int = typer.Option(
        1, min=1, help="Ranks on this box under torchrun (DDP), one GPU each; 1: one process."
    ),
    nnodes: int = typer.Option(1, min=1, help="Boxes taking part (torchrun)."),
    node_rank: int = typer.Option(0, min=0, help="This box's number; box 0 serves (torchrun)."),
    master_addr: str = typer.Option("127.0.0.1", help="Address of box 0 (torchrun)."),
    master_port: int | None = typer.Option(
        None, help="Rendezvous port on box 0 (torchrun; one box: a free one)."
    ),
    max_restarts: int | None = typer.Option(
        None, min=0, help="Restarts of the whole group after a rank fails [default: 3 when N>1]."
    ),
    heartbeat: float = setting("distributed_heartbeat_s", "--heartbeat-seconds"),
    collective_timeout: float = setting("distributed_timeout_s", "--collective-timeout"),
) -> None:
    """Run the training server (the seed's routes plus /docs)."""
    try:
        token = resolve_token(
            host,
            tunnel=tunnel is not TunnelChoice.none,
            token=token,
            no_auth=no_auth,
            any_page=allows_any_page(cors_origins or []),
        )
    except SecurityConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    setup_logging(log_level)
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
        settings = Settings(
            host=host,
            port=port,
            device=device,
            seed=seed,
            lr=lr,
            precision=precision.value,
            compile=compile,
            compile_mode=compile_mode.value,
            log_level=log_level,
            model=ModelConfig.from_dict(base),
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
            checkpoint_keep=checkpoint_keep,
            data_dir=data_dir,
            max_data_gb=max_data_gb,
            token=token,
            public=tunnel is not TunnelChoice.none,
            allowed_hosts=allowed_hosts or [],
            cors_origins=cors_origins or [],
            max_body_mb=max_body_mb,
            max_small_body_kb=max_small_body_kb,
            max_batch_samples=max_batch_samples,
            max_seq_len=max_seq_len,
            max_connections=max_connections,
            webhooks=webhooks or [],
            webhook_secret=webhook_secret,
            webhook_format=webhook_format.value,
            notify_loss_below=notify_loss_below,
            notify_margin=notify_margin,
            stall_minutes=stall_minutes,
            distributed_heartbeat_s=heartbeat,
            distributed_timeout_s=collective_timeout,
        )
    except ValueError as exc:
        typer.echo(f"error: {_first_line(exc)}", err=True)
        raise typer.Exit(2) from exc
    launching = nproc_per_node > 1 or nnodes > 1
    if launching and world_size_from_env() > 1:
        typer.echo("error: --nproc-per-node: this process already runs under torchrun", err=True)
        raise typer.Exit(2)
    rank = int(os.environ.get("RANK", "0")) if world_size_from_env() > 1 else 0
    problem = None
    if rank == 0:  # the other ranks bind no port; rank 0 checks the options
        problem = startup_problem(settings, ranks=nproc_per_node, serving=node_rank == 0)
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    if launching:
        if token:  # every rank 0 to come, restarts included, asks the same token
            os.environ["CORTEZA_TOKEN"] = token
        try:
            status = torchrun.run_launcher(
                ctx.obj["args"] if ctx.obj else [],
                settings,
                tunnel.value,
                nproc_per_node=nproc_per_node,
                nnodes=nnodes,
                node_rank=node_rank,
                master_addr=master_addr,
                master_port=master_port,
                max_restarts=max_restarts,
            )
        except TunnelError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        raise typer.Exit(status)
    try:
        group = join(settings)  # under torchrun: this rank's device and the process groups
    except DistributedSetupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if group is not None and not group.leader:
        follow(settings, group)
        return
    logger.info("serving on %s:%d, auth %s", host, port, "on" if token else "off")

    def ready(public_url: str | None, bound: int) -> None:
        """Once the model is up (and the tunnel open): the URL, the token, what to paste."""
        public_url = public_url or os.environ.get(torchrun.TUNNEL_URL_ENV)  # the launcher's
        print_lines(banner_lines(public_url or server_url(host, bound), token))
        if group is not None:
            print_lines(torchrun.banner_lines(group))

    try:
        serve_forever(settings, tunnel.value, ready)
    except TunnelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


# The help's panels: about 45 options read better in groups. An option not named
# here stays under "Options".
PANELS: dict[str, tuple[str, ...]] = {
    "Network and security": (
        "host",
        "port",
        "token",
        "no_auth",
        "allowed_hosts",
        "cors_origins",
        "tunnel",
        "max_body_mb",
        "max_small_body_kb",
        "max_batch_samples",
        "max_seq_len",
        "max_connections",
    ),
    "Model": (
        "preset",
        "input_dim",
        "lstm_hidden",
        "lstm_layers",
        "transformer_heads",
        "transformer_layers",
        "transformer_ff",
        "gmu_hidden",
        "mlp_hidden",
        "mlp_out",
        "attention_heads",
        "attention_ff",
        "head_hidden",
        "dropout",
    ),
    "Training": ("device", "seed", "lr"),
    "Several GPUs or boxes (torchrun, DDP)": (
        "nproc_per_node",
        "nnodes",
        "node_rank",
        "master_addr",
        "master_port",
        "max_restarts",
        "heartbeat",
        "collective_timeout",
    ),
    "Checkpoints": ("checkpoint_dir", "checkpoint_every", "checkpoint_seconds", "checkpoint_keep"),
    "Datasets": ("data_dir", "max_data_gb"),
    "Observability": (
        "log_level",
        "webhooks",
        "webhook_secret",
        "webhook_format",
        "notify_loss_below",
        "notify_margin",
        "stall_minutes",
    ),
}


def run(args: list[str], prog_name: str) -> None:
    """Parse ``args`` as :func:`serve`'s options and run it; exits as a command line does."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(cls=Command)(serve)
    command = typer.main.get_command(app)
    panel_of = {name: panel for panel, names in PANELS.items() for name in names}
    for param in command.params:
        param.rich_help_panel = panel_of.get(param.name or "")  # type: ignore[attr-defined]
    command.main(args, prog_name=prog_name, obj={"args": list(args)})


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
