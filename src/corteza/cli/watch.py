"""``corteza watch``: the server's training live in the terminal, from its event stream.

In a terminal: a loss sparkline, a status panel and the recent events, redrawn
as events arrive. Piped: one line per event (``--json``: one JSON object per
line). A server that goes away is waited for ("reconnecting...") and followed
again from the last event seen; Ctrl-C exits 0.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from corteza.cli.common import (
    DebugOption,
    JsonOption,
    ServerOption,
    TokenOption,
    server_client,
)
from corteza.client import Backoff, Client, TransportError
from corteza.client.events import Event
from corteza.wire import StatusResponse

BLOCKS = "▁▂▃▄▅▆▇█"
HISTORY = 400  # losses kept for the sparkline
RECENT = 8  # event rows shown
STATUS_EVERY = 5.0  # seconds between /status reads while events flow
RECONNECT = Backoff(first=0.25, maximum=2.0)

EventsOption = typer.Option(
    None, "--events", min=1, help="Exit after N events (replayed ones count); for scripts."
)


def sparkline(values: list[float], width: int) -> str:
    """The last ``width`` values as block characters, lowest ▁ to highest █."""
    shown = values[-width:] if width > 0 else []
    if not shown:
        return ""
    low, high = min(shown), max(shown)
    span = high - low
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[round((v - low) / span * top) if span else top // 2] for v in shown)


def describe(event: Event) -> str:
    """One line about ``event``, as the dashboard words it (its JSON when unknown)."""
    try:
        return _words(event.type, event.data)
    except (KeyError, TypeError, ValueError):
        return json.dumps(event.data, default=str)


def _words(kind: str, d: dict[str, Any]) -> str:
    match kind:
        case "batch_trained":
            return (
                f"step {d['step']} · loss {d['loss']:.4f} · {d['samples_per_second']:.1f} samples/s"
            )
        case "feedback":
            verdict = "validated" if d["validated"] else "not validated"
            return f"{verdict} · success rate {d['success_rate']:.0%} of {d['received']}"
        case "checkpoint_saved":
            return f"{d['name']} at step {d['step']} · {d['bytes']:,} bytes · {d['reason']}"
        case "loss_improved":
            return f"best loss {d['loss']:.4f} at step {d['step']}"
        case "run_started":
            return f"run {d['run_id']}"
        case "run_finished":
            last = "-" if d.get("last_loss") is None else f"{d['last_loss']:.4f}"
            return f"run {d['run_id']} · {d['batches']} batches · last loss {last}"
        case "stalled":
            return f"no batch for {d['idle_seconds']:.0f} s (step {d['last_step']})"
    return json.dumps(d, default=str)


def _clock(event: Event) -> str:
    return datetime.fromtimestamp(event.time).strftime("%H:%M:%S")


class WatchView:
    """What the terminal shows; updated by the event loop, drawn by rich's refresh thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self.losses: deque[float] = deque(maxlen=HISTORY)
        self.recent: deque[tuple[Event, int]] = deque(maxlen=RECENT)  # (event, batches merged)
        self.fields: dict[str, str] = {}
        self.connection = "connecting..."
        self.status_read = 0.0  # monotonic time of the last /status read
        # /status is read every STATUS_EVERY s; between reads, each newer batch adds its samples.
        self.step = 0  # the newest step counted in self.samples
        self.samples = 0

    def show_status(self, status: StatusResponse) -> None:
        s = status.estadisticas
        gpu = f"{s.gpu_memoria_mb:.0f} MB" if s.device.startswith("cuda") else "- (no GPU)"
        with self._lock:
            self.status_read = time.monotonic()
            self.step, self.samples = s.step, s.total_muestras
            self.fields.update(
                step=f"{s.step:,}",
                samples=f"{s.total_muestras:,}",
                best="-" if s.best_loss is None else f"{s.best_loss:.4f}",
                device=f"{s.dispositivo} ({s.device_name})",
                gpu=gpu,
                feedback=f"{s.feedback.tasa_exito:.0%} of {s.feedback.recibido}",
            )
            self.fields.setdefault("rate", f"{s.samples_per_second:.1f}")
            if s.last_loss is not None:
                self.fields.setdefault("loss", f"{s.last_loss:.4f}")

    def add(self, event: Event) -> None:
        d = event.data
        with self._lock:
            self.connection = "live"
            if event.type == "batch_trained":
                self.losses.append(float(d["loss"]))
                self.fields.update(loss=f"{d['loss']:.4f}", rate=f"{d['samples_per_second']:.1f}")
                if d["step"] > self.step:  # not counted by the last /status read yet
                    self.step, self.samples = d["step"], self.samples + int(d["samples"])
                    self.fields.update(step=f"{self.step:,}", samples=f"{self.samples:,}")
                best = self.fields.get("best", "-")
                if best == "-" or d["loss"] < float(best):
                    self.fields["best"] = f"{d['loss']:.4f}"
            elif event.type == "feedback":
                self.fields["feedback"] = f"{d['success_rate']:.0%} of {d['received']}"
            if self.recent and event.type == "batch_trained" == self.recent[0][0].type:
                self.recent[0] = (event, self.recent[0][1] + 1)  # consecutive batches: one row
            else:
                self.recent.appendleft((event, 1))

    def set_connection(self, text: str) -> None:
        with self._lock:
            self.connection = text

    def render(self) -> RenderableType:
        with self._lock:
            losses = list(self.losses)
            recent = list(self.recent)
            fields = dict(self.fields)
            connection = self.connection
        style = "green" if connection == "live" else "yellow"
        spark = Text(sparkline(losses, 72) or "waiting for batches...", style="cyan")
        if losses:
            spark.append(f"\n{min(losses[-72:]):.4f} .. {max(losses[-72:]):.4f}", style="dim")
        status = Table.grid(padding=(0, 2))
        for _ in range(4):
            status.add_column()
        rows = [
            ("step", "step"),
            ("loss", "loss"),
            ("best", "best"),
            ("samples/s", "rate"),
            ("device", "device"),
            ("GPU memory", "gpu"),
            ("samples", "samples"),
            ("feedback", "feedback"),
        ]
        cells = [(Text(label, style="bold"), Text(fields.get(key, "-"))) for label, key in rows]
        for left, right in zip(cells[::2], cells[1::2], strict=True):
            status.add_row(*left, *right)
        events = Table.grid(padding=(0, 2))
        for event, count in recent:
            label = event.type if count == 1 else f"{event.type} x{count}"
            events.add_row(
                Text(_clock(event), style="dim"), Text(label, style="bold"), Text(describe(event))
            )
        title = f"corteza · {escape(self.url)} · [{style}]{escape(connection)}[/]"
        return Group(
            Panel(spark, title=title, title_align="left", subtitle="loss per step"),
            Panel(status, title="status", title_align="left"),
            Panel(
                events or Text("no events yet", style="dim"),
                title="recent events",
                title_align="left",
            ),
        )


def _follow(client: Client, view: WatchView, emit: Any, limit: int | None) -> None:
    """Feed ``view`` (and ``emit``) until ``limit`` events; wait out a server that went away."""
    last_id: int | None = None
    seen = attempt = 0
    while True:
        try:
            for event in client.events(last_id, reconnect=False):
                last_id, attempt, seen = event.id, 0, seen + 1
                view.add(event)
                emit(event)
                if limit is not None and seen >= limit:
                    return
                if time.monotonic() - view.status_read > STATUS_EVERY:
                    view.show_status(client.status())
            reason = "the server ended the stream"
        except TransportError as exc:
            reason = str(exc)
        view.set_connection(f"reconnecting... ({reason})")
        emit(None)
        time.sleep(RECONNECT.delay(attempt))
        attempt += 1
        try:
            view.show_status(client.status())
        except TransportError:
            continue


def watch(
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    events: int | None = EventsOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Follow a server's training live: loss sparkline, status, recent events."""
    out = Console()
    err = Console(stderr=True)
    with server_client(server, token, as_json=as_json, debug=debug, retries=0) as client:
        view = WatchView(client.url)
        view.show_status(client.status())  # an unreachable server: one clear line, exit 1

        said: list[str] = []  # the last connection message printed

        def emit(event: Event | None) -> None:
            if event is None:
                if said != [view.connection]:
                    said[:] = [view.connection]
                    err.print(
                        f"[yellow]{escape(view.connection)}[/]", highlight=False, soft_wrap=True
                    )
                return
            said.clear()
            if as_json:
                typer.echo(
                    json.dumps(
                        {"id": event.id, "type": event.type, "time": event.time, **event.data}
                    )
                )
            elif not out.is_terminal:
                out.print(
                    f"{_clock(event)} {event.type} {describe(event)}",
                    highlight=False,
                    soft_wrap=True,
                )

        try:
            if out.is_terminal and not as_json:
                with Live(console=out, get_renderable=view.render, refresh_per_second=4):
                    _follow(client, view, lambda _: None, events)
            else:
                _follow(client, view, emit, events)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
