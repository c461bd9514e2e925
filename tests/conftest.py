"""Shared fixtures: a real uvicorn on 127.0.0.1 with a free port, serving a tiny model."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI

from corteza.client import free_port
from corteza.model import ModelConfig
from corteza.server import Settings
from corteza.server.launch.server import TunnelledServer
from corteza.server.state import ServerState

TINY = ModelConfig.tiny()
FIGURES = pytest.StashKey[list[str]]()

# The suite runs on the CPU, so its expectations ("CPU", ``cuda: False``, GPU memory 0)
# hold on a GPU machine too; only tests marked ``cuda`` use the GPU. In this process,
# Settings read CORTEZA_DEVICE (fixtures of any scope); subprocess servers (`corteza
# train`, `corteza demo`, LocalServer) see no GPU (``_cpu_only``). CUDA is probed first,
# so hiding the GPUs from subprocesses does not hide them from the ``cuda`` tests.
CUDA = torch.cuda.is_available()
os.environ["CORTEZA_DEVICE"] = "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available())")

# Tiny models gain nothing from intra-op threads, and OpenMP workers that
# spin against another busy process slow a 25k-parameter step 80-fold.
torch.set_num_threads(1)


@dataclass
class LiveServer:
    """A real uvicorn serving ``app`` in a background thread."""

    app: FastAPI
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def state(self) -> ServerState:
        state: ServerState = self.app.state.corteza
        return state

    def http(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)  # type: ignore[arg-type]


def start_server(settings: Settings, port: int | None = None) -> LiveServer:
    """Serve ``settings`` on ``port`` (default: a free one; a fixed one restarts a server there)."""
    port = port or free_port()
    # The server `corteza serve` runs, limits and shutdown included, without a tunnel.
    server = TunnelledServer(settings.model_copy(update={"port": port}), None, log_level="warning")
    app = server.app
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    return LiveServer(app, f"http://127.0.0.1:{port}", server, thread)


def stop_server(live: LiveServer) -> None:
    live.server.should_exit = True
    live.thread.join(timeout=30)


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers without --data-dir keep datasets in the cache, and lock it: one per session."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _no_saved_server(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A developer's own `corteza connect` must not redirect the tests (subprocesses too)."""
    monkeypatch.setenv("CORTEZA_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))  # its servers'
    monkeypatch.delenv("CORTEZA_URL", raising=False)
    monkeypatch.delenv("COLAB_SERVER_URL", raising=False)
    monkeypatch.delenv("CORTEZA_TOKEN", raising=False)


@pytest.fixture(autouse=True)
def _cpu_only(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Subprocesses that pick their device (``auto``) pick the CPU, except in ``cuda`` tests."""
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def tiny_settings() -> Settings:
    return Settings(model=TINY, seed=0, lr=1e-3, device="cpu")


@pytest.fixture
def live_server(tiny_settings: Settings) -> Iterator[LiveServer]:
    live = start_server(tiny_settings)
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture
def checkpointed_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The tiny server with checkpoints (and so its datasets) in ``tmp_path / "ckpt"``."""
    settings = Settings(model=TINY, seed=0, lr=1e-3, device="cpu", checkpoint_dir=tmp_path / "ckpt")
    live = start_server(settings)
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.http() as client:
        yield client


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measured figure; the run ends with a "figures" section listing them all,
    so CI prints them without ``-s``."""
    lines = request.config.stash.setdefault(FIGURES, [])

    def record(line: str) -> None:
        lines.append(line)
        print(line)

    return record


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
