"""``AsyncClient.pull`` and ``push``: what ``Client`` does, against real servers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from corteza.client import AsyncClient, Client, ConnectError, InvalidDataError, free_port
from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import assert_same_model, samples, snapshot_model


def _trained_server(root: Path) -> LiveServer:
    live = start_server(Settings(model=TINY, checkpoint_dir=root, checkpoint_every=100))
    with live.http() as http:
        for seq in range(3):
            body = {"samples": samples(4, TINY.input_dim, seed=seq), "run_id": "r", "seq": seq}
            assert http.post("/train_layer2", json=body).status_code == 200
        assert http.post("/v1/checkpoint").status_code == 200
    return live


async def _pull(url: str, dest: Path) -> Path:
    async with AsyncClient(url) as client:
        return await client.pull(dest)


async def _push(url: str, folder: Path) -> dict[str, Any]:
    async with AsyncClient(url) as client:
        return await client.push(folder)


def test_an_async_pull_and_push_match_the_clients(tmp_path: Path, live_server: LiveServer) -> None:
    source = _trained_server(tmp_path / "a")
    try:
        folder = asyncio.run(_pull(source.url, tmp_path / "async"))
        with Client(source.url) as client:
            same = client.pull(tmp_path / "sync")
        expected = snapshot_model(source.state)
    finally:
        stop_server(source)
    assert folder.name == same.name
    names = sorted(p.name for p in same.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == names
    for name in names:
        assert (folder / name).read_bytes() == (same / name).read_bytes()
    result = asyncio.run(_push(live_server.url, folder))
    assert result["status"] == "loaded"
    assert result["runs"] == {"r": 3}
    assert_same_model(expected, snapshot_model(live_server.state))


def test_async_transfers_fail_as_the_clients_do(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError) as info:
        asyncio.run(_push("http://127.0.0.1:1", tmp_path))
    assert str(info.value) == f"{tmp_path} is not a checkpoint folder (no MANIFEST.json)"
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError) as refused:
        asyncio.run(_pull(url, tmp_path))
    assert str(refused.value).startswith(f"Cannot connect to {url}: ")
