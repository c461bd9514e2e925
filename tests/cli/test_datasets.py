"""``corteza datasets``: upload once, list, remove, as a user types them."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from corteza.client import Client, free_port
from corteza.server import Settings
from corteza.server.datasets.folder_lock import data_folder_busy
from corteza.server.datasets.store import DatasetStore
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import corteza, serve_process, wait_healthy

WIDE = {**os.environ, "COLUMNS": "200"}  # a table wide enough that no name is wrapped


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(Settings(model=TINY, seed=0, device="cpu", data_dir=tmp_path / "data"))
    try:
        yield live
    finally:
        stop_server(live)


def test_upload_list_and_remove(server: LiveServer, data_file: Path) -> None:
    sha = hashlib.sha256(data_file.read_bytes()).hexdigest()
    size = data_file.stat().st_size
    first = corteza("datasets", "upload", str(data_file), "--server", server.url, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"sha256": sha, "uploaded_bytes": size, "present": False}
    again = corteza("datasets", "upload", str(data_file), "--server", server.url)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"data.npz is on the server already: {sha}\n"

    listed = corteza("datasets", "--server", server.url, "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)["datasets"]
    assert (entry["sha256"], entry["name"], entry["samples"]) == (sha, "data.npz", 120)

    removed = corteza("datasets", "rm", sha[:12], "--server", server.url)
    assert (removed.returncode, removed.stdout) == (0, f"Removed {sha}\n")
    gone = corteza("datasets", "rm", sha[:12], "--server", server.url)
    assert gone.returncode == 2
    assert gone.stderr.strip() == f"error: No dataset on the server starts with {sha[:12]}"
    assert server.state.datasets.list() == []


def test_names_with_rich_markup_are_printed_as_they_are(server: LiveServer) -> None:
    name = "evil[bold]x[on red].npz"  # read as markup, its brackets would vanish
    rng = np.random.default_rng(0)
    x = rng.random((40, TINY.input_dim), dtype=np.float32)
    stored = server.state.datasets.add_arrays(x, np.arange(40) % 2, name=name)
    listed = corteza("datasets", "list", "--server", server.url, env=WIDE)
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout
    with Client(server.url) as client:
        job = client.start_job(stored.sha256, epochs=1, batch_size=8, holdout=0.25)
    jobs = corteza("jobs", "list", "--server", server.url, env=WIDE)
    assert jobs.returncode == 0, jobs.stderr
    assert name in jobs.stdout
    shown = corteza("jobs", "show", job.id, "--server", server.url, env=WIDE)
    assert shown.returncode == 0, shown.stderr
    assert f"dataset {name} ({stored.sha256[:16]})" in shown.stdout


def test_a_second_server_on_the_same_data_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    store = DatasetStore(folder, max_bytes=None)  # this process serves from it
    try:
        refused = corteza(
            "serve", "--preset", "tiny", "--port", str(free_port()), "--data-dir", str(folder)
        )
    finally:
        store.close()
    assert (refused.returncode, refused.stdout + refused.stderr) == (
        2,
        f"error: the data folder {folder} is in use by another corteza server: stop it, or "
        "give this one a folder of its own with --data-dir\n",
    )
    assert data_folder_busy(folder) is None  # let go: the next server may take it


def test_servers_without_a_folder_of_their_own_share_the_cache(tmp_path: Path) -> None:
    """The local server `corteza train` starts must not be refused for a `corteza serve`."""
    cache = tmp_path / "cache"
    store = DatasetStore(cache / "corteza" / "datasets", max_bytes=None)  # held, as if chosen
    port = free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    log = tmp_path / "server.log"
    process = serve_process("--preset", "tiny", "--port", str(port), log=log, env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process=process, log=log)
    finally:
        process.terminate()
        process.wait(timeout=60)
        store.close()
