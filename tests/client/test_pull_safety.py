"""Pulling from a hostile server writes nowhere but the destination; pulling twice is safe.

The hostile server here is a stand-in (a plain http.server): a real one never lies."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from corteza.client import free_port
from corteza.client.errors import InvalidDataError, ProtocolError
from corteza.client.transfer import MANIFEST_LIMIT, pull_checkpoint, push_checkpoint
from corteza.server import Settings
from tests.conftest import TINY, start_server, stop_server
from tests.helpers import samples

CONTENT = b"weights"
GOOD_FILES = {"model.safetensors": {"sha256": hashlib.sha256(CONTENT).hexdigest(), "bytes": 7}}


class Hostile:
    """Serves a listing chosen by the test and any file as ``CONTENT``."""

    def __init__(self) -> None:
        self.listing: dict[str, Any] = {}
        self.manifest: bytes = b""


@pytest.fixture
def hostile() -> Iterator[tuple[Hostile, str]]:
    box = Hostile()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v1/checkpoint":
                body = json.dumps(box.listing).encode()
            elif self.path.endswith("/MANIFEST.json"):
                body = box.manifest
            else:
                body = CONTENT
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield box, f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def _serve(box: Hostile, name: str, files: dict[str, Any]) -> None:
    box.manifest = json.dumps({"format": 1, "files": files}).encode()
    box.listing = {
        "checkpoint": name,
        "files": files,
        "manifest": "MANIFEST.json",
        "manifest_sha256": hashlib.sha256(box.manifest).hexdigest(),
    }


@pytest.mark.parametrize(
    ("name", "files", "what"),
    [
        ("../escaped", GOOD_FILES, "its checkpoint"),
        ("/tmp/absolute", GOOD_FILES, "its checkpoint"),
        ("..", GOOD_FILES, "its checkpoint"),
        ("back\\slash", GOOD_FILES, "its checkpoint"),
        ("C:drive", GOOD_FILES, "its checkpoint"),
        (".hidden", GOOD_FILES, "its checkpoint"),
        ("ckpt-1", {"../../outside": GOOD_FILES["model.safetensors"]}, "a checkpoint file"),
        ("ckpt-1", {"..\\outside": GOOD_FILES["model.safetensors"]}, "a checkpoint file"),
    ],
)
def test_a_name_that_is_not_one_plain_component_is_refused(
    hostile: tuple[Hostile, str], tmp_path: Path, name: str, files: dict[str, Any], what: str
) -> None:
    box, url = hostile
    _serve(box, name, files)
    dest = tmp_path / "inside" / "dest"
    with httpx.Client(base_url=url) as http, pytest.raises(ProtocolError) as info:
        pull_checkpoint(http, dest)
    shown = name if what == "its checkpoint" else next(iter(files))
    assert str(info.value) == (
        f"the server named {what} {shown!r}, which is not one plain file name; refusing to write it"
    )
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert written in ([], ["inside"], ["inside", "inside/dest"])


def test_a_manifest_that_differs_from_the_listing_is_refused(
    hostile: tuple[Hostile, str], tmp_path: Path
) -> None:
    box, url = hostile
    _serve(box, "ckpt-1", GOOD_FILES)
    box.manifest = json.dumps({"format": 1, "files": {}}).encode()
    box.listing["manifest_sha256"] = hashlib.sha256(box.manifest).hexdigest()
    with httpx.Client(base_url=url) as http, pytest.raises(ProtocolError) as info:
        pull_checkpoint(http, tmp_path)
    assert str(info.value) == "MANIFEST.json of ckpt-1 does not list what the server listed"
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone too


def test_pulling_again_returns_the_same_folder_and_a_different_one_is_refused(
    tmp_path: Path,
) -> None:
    live = start_server(Settings(model=TINY, seed=0, checkpoint_dir=tmp_path / "ckpt"))
    try:
        with live.http() as http:
            body = {"samples": samples(2, TINY.input_dim)}
            assert http.post("/train_layer2", json=body).status_code == 200
            assert http.post("/v1/checkpoint").status_code == 200
            first = pull_checkpoint(http, tmp_path / "pulled")
            before = {p.name: p.read_bytes() for p in first.iterdir()}
            again = pull_checkpoint(http, tmp_path / "pulled")
            assert again == first
            assert {p.name: p.read_bytes() for p in again.iterdir()} == before
            (first / "MANIFEST.json").write_text("{}")
            with pytest.raises(InvalidDataError) as info:
                pull_checkpoint(http, tmp_path / "pulled")
    finally:
        stop_server(live)
    assert str(info.value) == (
        f"{first} already exists and holds something else: move it away or pull into another folder"
    )
    assert sorted(p.name for p in (tmp_path / "pulled").iterdir()) == [first.name]


def test_a_file_longer_than_its_manifest_says_is_cut_off(
    hostile: tuple[Hostile, str], tmp_path: Path
) -> None:
    box, url = hostile
    short = {"model.safetensors": {**GOOD_FILES["model.safetensors"], "bytes": 3}}
    _serve(box, "ckpt-1", short)
    with httpx.Client(base_url=url) as http, pytest.raises(ProtocolError) as info:
        pull_checkpoint(http, tmp_path)
    assert str(info.value) == (
        "model.safetensors arrived corrupted (more than 3 bytes); pull again"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_manifest_over_16_mb_is_cut_off(hostile: tuple[Hostile, str], tmp_path: Path) -> None:
    box, url = hostile
    _serve(box, "ckpt-1", GOOD_FILES)
    box.manifest = box.manifest + b" " * (MANIFEST_LIMIT + 1 - len(box.manifest))
    box.listing["manifest_sha256"] = hashlib.sha256(box.manifest).hexdigest()
    with httpx.Client(base_url=url) as http, pytest.raises(ProtocolError) as info:
        pull_checkpoint(http, tmp_path)
    assert str(info.value) == (
        "MANIFEST.json arrived corrupted (more than 16777216 bytes); pull again"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        (
            "../secret",
            ProtocolError,
            "the server named a checkpoint file '../secret', which is not one plain file "
            "name; refusing to write it",
        ),
        ("notes.txt", InvalidDataError, "lists 'notes.txt', which is not a checkpoint file"),
    ],
)
def test_a_push_reads_only_the_checkpoint_files(
    hostile: tuple[Hostile, str], tmp_path: Path, name: str, error: type[Exception], message: str
) -> None:
    _, url = hostile
    (tmp_path / "secret").write_bytes(b"private")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"private")
    (folder / "MANIFEST.json").write_text(json.dumps({"format": 1, "files": {name: {}}}))
    with httpx.Client(base_url=url) as http, pytest.raises(error) as info:
        push_checkpoint(http, folder)
    assert str(info.value).endswith(message)
