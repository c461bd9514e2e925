"""Client.upload_dataset against a real server: upload once, skip, resume, refuse."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from corteza.client import (
    AsyncClient,
    Client,
    InvalidBatchError,
    InvalidDataError,
    NotFoundError,
    PayloadTooLargeError,
)
from corteza.client.errors import ProtocolError
from corteza.client.uploads import PIECE, upload_dataset
from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("datasets")
    live = start_server(Settings(model=TINY, seed=0, device="cpu", data_dir=data_dir))
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c
    for dataset in server.state.datasets.list():  # each test starts with none
        server.state.datasets.delete(dataset.sha256)


def _data(path: Path, n: int, *, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.random((n, TINY.input_dim), dtype=np.float32)
    np.savez(path, X=x, y=(np.arange(n) % 2).astype(np.float32))
    return path


def _received(client: Client) -> int:
    return client.datasets().upload_bytes_received


def test_upload_list_and_head(client: Client, server: LiveServer, tmp_path: Path) -> None:
    path = _data(tmp_path / "train.npz", 200)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    before = _received(client)
    assert client.upload_dataset(path) == sha
    listing = client.datasets()
    assert [(d.sha256, d.name, d.samples, d.shape) for d in listing.datasets] == [
        (sha, "train.npz", 200, [200, TINY.input_dim])
    ]
    assert listing.upload_bytes_received - before == path.stat().st_size
    assert listing.uploads == []
    with httpx.Client(base_url=server.url) as http:
        assert http.head(f"/v1/datasets/{sha}").status_code == 200
        assert http.head(f"/v1/datasets/{'0' * 64}").status_code == 404
    np.testing.assert_array_equal(server.state.datasets.open(sha).inputs, np.load(path)["X"])


def test_a_second_upload_of_the_same_file_sends_no_data(client: Client, tmp_path: Path) -> None:
    path = _data(tmp_path / "same.npz", 100)
    client.upload_dataset(path)
    before = _received(client)
    reports: list[tuple[int, int]] = []
    sha = client.upload_dataset(path, progress=lambda done, total: reports.append((done, total)))
    assert _received(client) - before == 0
    assert reports == []
    assert [d.sha256 for d in client.datasets().datasets] == [sha]


class CutError(Exception):
    """Stands for the PC losing its connection (or Ctrl-C) in the middle of a request."""


def test_an_upload_cut_in_the_middle_resumes_from_the_servers_offset(
    client: Client, tmp_path: Path
) -> None:
    path = _data(tmp_path / "big.npz", 20_000)  # 2.6 MB: three 1 MiB pieces of one request
    size = path.stat().st_size
    before = _received(client)

    def cut_after_one_piece(done: int, total: int) -> None:
        if done >= PIECE:
            raise CutError

    with pytest.raises(CutError):
        client.upload_dataset(path, progress=cut_after_one_piece, chunk_size=4 * PIECE)
    wait_until(
        lambda: [u.offset for u in client.datasets().uploads] == [PIECE],
        "the server keeps the first MiB of the cut request",
    )
    assert client.datasets().datasets == []

    reports: list[int] = []
    sha = client.upload_dataset(path, progress=lambda done, total: reports.append(done))
    assert reports[0] == PIECE  # asked the server, went on from there
    assert reports[-1] == size
    assert _received(client) - before == size  # no byte sent twice
    listing = client.datasets()
    assert [d.sha256 for d in listing.datasets] == [sha] and listing.uploads == []


def test_a_nan_row_is_named_and_nothing_is_stored(
    client: Client, server: LiveServer, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((50, TINY.input_dim), dtype=np.float32)
    x[37, 3] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, X=x, y=np.zeros(50, np.float32))
    with pytest.raises(InvalidBatchError) as refused:
        client.upload_dataset(path)
    assert str(refused.value) == "Non-finite input: sample 37 contains NaN or Inf"
    assert (refused.value.status, refused.value.error_type) == (422, "non_finite_input")
    listing = client.datasets()
    assert listing.datasets == [] and listing.uploads == []
    root = server.state.datasets.root
    assert [p.name for p in root.iterdir() if p.name != ".uploads"] == []
    assert list((root / ".uploads").iterdir()) == []


def test_a_path_that_is_not_a_data_file_is_refused_before_anything_is_sent(
    client: Client, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("1,2\n")
    with pytest.raises(InvalidDataError) as unknown:
        client.upload_dataset(tmp_path / "notes.txt")
    assert str(unknown.value) == "Unknown data format '.txt': use .json, .npz, .npy or .csv"
    with pytest.raises(InvalidDataError) as missing:
        client.upload_dataset(tmp_path / "missing.npz")
    assert str(missing.value) == f"No such file: {tmp_path / 'missing.npz'}"


def test_the_quota_refuses_an_upload_before_it_starts(tmp_path: Path) -> None:
    settings = Settings(
        model=TINY, seed=0, device="cpu", data_dir=tmp_path / "data", max_data_gb=20e-6
    )
    live = start_server(settings)  # a 20 kB quota
    try:
        path = _data(tmp_path / "d.npz", 200)  # 26 kB
        with Client(live.url) as c:
            with pytest.raises(PayloadTooLargeError) as refused:
                c.upload_dataset(path)
            assert str(refused.value) == (
                f"Dataset quota exceeded: {path.stat().st_size / 1e3:.1f} kB do not fit in the "
                "20.0 kB left of 20.0 kB (--max-data-gb; remove one with corteza datasets rm)"
            )
            assert refused.value.error_type == "quota_exceeded"
            listing = c.datasets()
        assert listing.upload_bytes_received == 0
        assert listing.uploads == [] and listing.datasets == []
    finally:
        stop_server(live)


def test_the_async_client_uploads_lists_and_deletes(
    client: Client, server: LiveServer, tmp_path: Path
) -> None:
    path = _data(tmp_path / "async.npz", 60)

    async def run() -> tuple[str, list[str], list[str]]:
        async with AsyncClient(server.url) as c:
            sha = await c.upload_dataset(path)
            listed = [d.sha256 for d in (await c.datasets()).datasets]
            await c.delete_dataset(sha)
            with pytest.raises(NotFoundError) as gone:
                await c.delete_dataset(sha)
            assert str(gone.value) == f"No dataset {sha} on this server"
            return sha, listed, [d.sha256 for d in (await c.datasets()).datasets]

    sha, listed, after = asyncio.run(run())
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (listed, after) == ([sha], [])


def test_an_upload_location_on_another_server_is_refused(tmp_path: Path) -> None:
    """A stand-in server (plain http.server) answers a Location elsewhere; no token leaves."""
    reached: list[str] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            reached.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.end_headers()

        def do_PATCH(self) -> None:
            self.do_HEAD()

        def log_message(self, *args: Any) -> None:
            pass

    class Hostile(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # the dataset is not here
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            self.send_response(201)
            self.send_header("Location", f"http://127.0.0.1:{other.server_port}/steal")
            self.send_header("Upload-Offset", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    hostile = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    for server in (other, hostile):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hostile.server_port}"
    path = _data(tmp_path / "d.npz", 8)
    try:
        with (
            httpx.Client(base_url=url, headers={"Authorization": "Bearer secret"}) as http,
            pytest.raises(ProtocolError) as refused,
        ):
            upload_dataset(http, path)
    finally:
        for server in (other, hostile):
            server.shutdown()
            server.server_close()
    assert str(refused.value) == (
        f"/v1/datasets/uploads answered Location 'http://127.0.0.1:{other.server_port}/steal', "
        f"which is not on http://127.0.0.1:{hostile.server_port}: the upload (and its token) "
        "goes only to the server"
    )
    assert reached == []
