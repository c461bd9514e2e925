"""``corteza watch`` as a real subprocess, following a real server's event stream."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO

import pytest

from corteza.cli.watch import sparkline
from corteza.client import Client, free_port, make_dataset
from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BATCH_LINE = re.compile(
    r"\d\d:\d\d:\d\d batch_trained step (\d+) · loss (\d\.\d{4}) · \d+\.\d samples/s"
)
TIMEOUT = 60.0


class Watched:
    """A running ``corteza watch``; its output read line by line, with timeouts."""

    def __init__(self, url: str, args: tuple[str, ...], terminal: bool) -> None:
        env = {**os.environ, "TTY_COMPATIBLE": "1" if terminal else "0", "COLUMNS": "100"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "corteza", "watch", "--server", url, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.out: queue.Queue[str | None] = queue.Queue()
        self.err: queue.Queue[str | None] = queue.Queue()
        self.readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str], lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)
        stream.close()

    def line(self, lines: queue.Queue[str | None]) -> str:
        line = lines.get(timeout=TIMEOUT)
        assert line is not None, "watch ended early"
        return line

    def read_until(self, pattern: str) -> str:
        """Standard output up to the first line matching ``pattern``; that line."""
        while not re.fullmatch(pattern, line := self.line(self.out).rstrip("\n")):
            pass
        return line

    def finish(self) -> tuple[int, str, str]:
        """Exit code and the output not read yet, once the process ends."""
        code = self.process.wait(timeout=TIMEOUT)
        for reader in self.readers:
            reader.join(timeout=TIMEOUT)
        out, err = ("".join(iter(q.get_nowait, None)) for q in (self.out, self.err))
        return code, out, err

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for reader in self.readers:
            reader.join(timeout=TIMEOUT)


class Watch:
    """Starts ``corteza watch`` processes; kills what is left of them at the end."""

    def __init__(self) -> None:
        self.started: list[Watched] = []

    def __call__(self, url: str, *args: str, terminal: bool = False) -> Watched:
        self.started.append(Watched(url, args, terminal))
        return self.started[-1]


@pytest.fixture
def watch() -> Iterator[Watch]:
    processes = Watch()
    yield processes
    for watched in processes.started:
        watched.kill()


class Training(threading.Thread):
    """Trains batches through the real client until stopped; keeps each step's loss."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.losses: dict[int, float] = {}

    def run(self) -> None:
        data = make_dataset(64, input_dim=TINY.input_dim, seed=2)
        with Client(self.url) as client:
            while not self.stop.wait(0.05):
                answer = client.train_batch(data.X[:8], data.y[:8])
                self.losses[answer.step] = answer.loss

    def __enter__(self) -> Training:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=30)


def test_watch_prints_n_events_and_exits_0(live_server: LiveServer, watch: Watch) -> None:
    watched = watch(live_server.url, "--events", "5")
    with Training(live_server.url) as training:
        code, out, err = watched.finish()
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 5
    assert BATCH_LINE.fullmatch(lines[0]), lines[0]
    batches = [m.groups() for m in map(BATCH_LINE.fullmatch, lines) if m]
    assert [int(step) for step, _ in batches] == list(range(1, len(batches) + 1))
    for step, loss in batches:
        assert loss == f"{training.losses[int(step)]:.4f}"


def test_watch_json_lines(live_server: LiveServer, watch: Watch) -> None:
    watched = watch(live_server.url, "--events", "3", "--json")
    with Training(live_server.url):
        code, out, err = watched.finish()
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    ids = [e["id"] for e in events]
    assert ids == list(range(ids[0], ids[0] + 3))
    assert events[0]["type"] == "batch_trained"
    assert {"step", "loss", "samples_per_second", "batch_id", "time"} <= events[0].keys()


def test_watch_draws_the_live_view_in_a_terminal(live_server: LiveServer, watch: Watch) -> None:
    watched = watch(live_server.url, "--events", "12", terminal=True)
    with Training(live_server.url):
        code, out, err = watched.finish()
    assert code == 0, err
    out = ANSI.sub("", out)
    assert f"corteza · {live_server.url} · live" in out
    assert re.search(f"[{'▁▂▃▄▅▆▇█'}]{{5,}}", out)
    for label in ("status", "recent events", "samples/s", "GPU memory", "- (no GPU)"):
        assert label in out
    assert "batch_trained x" in out  # consecutive batches share a row


def test_the_live_view_counts_samples_as_batches_arrive(
    live_server: LiveServer, watch: Watch
) -> None:
    watched = watch(live_server.url, "--events", "6", terminal=True)
    with Training(live_server.url):  # 8 samples per batch, one step each
        code, out, err = watched.finish()
    assert code == 0, err
    out = ANSI.sub("", out)
    step = int(re.findall(r"step\s+([\d,]+)\s+loss", out)[-1].replace(",", ""))
    samples = int(re.findall(r"samples\s+([\d,]+)\s+feedback", out)[-1].replace(",", ""))
    assert step > 0  # the last frame, drawn after the last event
    assert samples == 8 * step


def test_an_unreachable_server_is_one_clear_line(watch: Watch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = watch(url).finish()
    assert code == 1
    assert out == ""
    assert err == f"error: Cannot connect to {url}: [Errno 111] Connection refused\n"


def test_watch_waits_for_a_restarted_server(tiny_settings: Settings, watch: Watch) -> None:
    port = free_port()
    data = make_dataset(8, input_dim=TINY.input_dim, seed=2)
    server = start_server(tiny_settings, port=port)
    try:
        watched = watch(server.url)
        with Client(server.url) as client:
            for _ in range(3):
                client.train_batch(data.X, data.y)
        watched.read_until(r".* batch_trained step 3 · .*")
        stop_server(server)
        assert watched.line(watched.err).startswith("reconnecting... (")
        server = start_server(tiny_settings, port=port)  # a new process: new event ids
        with Client(server.url) as client:
            client.train_batch(data.X, data.y)
        watched.read_until(r".* batch_trained step 1 · .*")
        watched.process.send_signal(signal.SIGINT)
        code, _, err = watched.finish()
    finally:
        stop_server(server)
    assert code == 0, err


def test_ctrl_c_exits_0(live_server: LiveServer, watch: Watch) -> None:
    watched = watch(live_server.url)
    with Training(live_server.url):
        watched.read_until(BATCH_LINE.pattern)
        watched.process.send_signal(signal.SIGINT)
        code, _, err = watched.finish()
    assert code == 0, err
    assert err == ""


@pytest.mark.parametrize(
    ("values", "width", "expected"),
    [
        ([0, 1, 2, 3, 4, 5, 6, 7], 8, "▁▂▃▄▅▆▇█"),
        ([5, 9, 1], 2, "█▁"),
        ([0.3, 0.3], 10, "▄▄"),
        ([], 10, ""),
    ],
)
def test_sparkline(values: list[float], width: int, expected: str) -> None:
    assert sparkline(values, width) == expected
