"""``corteza datasets``: upload once, list, remove, as a user types them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import corteza


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
