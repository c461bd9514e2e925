"""The tus 1.0 upload and the dataset routes, spoken by hand to a real server."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import wait_until

TUS = {"Tus-Resumable": "1.0.0"}
TOKEN = "datasets-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = Settings(
        model=TINY,
        seed=0,
        device="cpu",
        token=TOKEN,
        data_dir=tmp_path_factory.mktemp("datasets"),
        max_body_mb=1.0,  # a PATCH of more than 1 MiB is refused
    )
    live = start_server(settings)
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.http(headers=AUTH) as client:
        yield client
    for upload_id in [p.stem for p in server.state.dataset_uploads.base.glob("*.json")]:
        server.state.dataset_uploads.discard(upload_id)
    for dataset in server.state.datasets.list():
        server.state.datasets.delete(dataset.sha256)


def _npz(n: int = 40) -> bytes:
    """The bytes of an .npz data file of ``n`` samples."""
    x = np.random.default_rng(0).random((n, TINY.input_dim), dtype=np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, X=x, y=(np.arange(n) % 2).astype(np.float32))
    return buffer.getvalue()


def _meta(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def _create(http: httpx.Client, data: bytes, sha: str, name: str = "d.npz") -> httpx.Response:
    headers = {
        **TUS,
        "Upload-Length": str(len(data)),
        "Upload-Metadata": _meta(filename=name, sha256=sha),
    }
    return http.post("/v1/datasets/uploads", headers=headers)


def _patch(http: httpx.Client, location: str, body: bytes, offset: int) -> httpx.Response:
    headers = {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    return http.patch(location, content=body, headers=headers)


def test_options_says_the_protocol(http: httpx.Client) -> None:
    answer = http.options("/v1/datasets/uploads")
    assert answer.status_code == 204
    assert answer.headers["tus-version"] == "1.0.0"
    assert answer.headers["tus-extension"] == "creation,termination"


def test_a_request_without_tus_resumable_is_refused(http: httpx.Client) -> None:
    data = _npz()
    answer = http.post(
        "/v1/datasets/uploads",
        headers={
            "Upload-Length": str(len(data)),
            "Upload-Metadata": _meta(filename="d.npz", sha256="0" * 64),
        },
    )
    assert answer.status_code == 412
    assert answer.json() == {
        "status": "error",
        "error": "Tus-Resumable must be 1.0.0, got 'none'",
        "error_type": "unsupported_protocol",
    }


def test_a_corrupt_upload_is_refused_and_nothing_is_stored(
    http: httpx.Client, server: LiveServer
) -> None:
    data = _npz()
    claimed = hashlib.sha256(b"other bytes").hexdigest()
    created = _create(http, data, claimed)
    assert created.status_code == 201 and created.headers["upload-offset"] == "0"
    location = created.headers["location"]
    assert _patch(http, location, data[:100], 0).headers["upload-offset"] == "100"
    refused = _patch(http, location, data[100:], 100)
    assert refused.status_code == 422
    assert refused.json() == {
        "status": "error",
        "error": f"Upload corrupted: the file's sha256 is {hashlib.sha256(data).hexdigest()}, "
        f"expected {claimed}; nothing was stored",
        "error_type": "hash_mismatch",
    }
    assert http.head(location, headers=TUS).status_code == 404  # the upload is gone
    listing = http.get("/v1/datasets").json()
    assert listing["datasets"] == [] and listing["uploads"] == []
    root = server.state.datasets.root
    assert [p.name for p in root.iterdir()] == [".uploads"]
    assert list((root / ".uploads").iterdir()) == []


def test_an_offset_that_is_not_the_servers_is_a_409_naming_it(http: httpx.Client) -> None:
    data = _npz()
    location = _create(http, data, hashlib.sha256(data).hexdigest()).headers["location"]
    assert _patch(http, location, data[:64], 0).status_code == 204
    answer = _patch(http, location, data[10:64], 10)
    assert answer.status_code == 409
    assert answer.json() == {
        "status": "error",
        "error": f"Upload-Offset 10 is not where upload {location.rsplit('/', 1)[1]} ends (64): "
        "ask its offset (HEAD) and continue from there",
        "error_type": "upload_conflict",
        "offset": 64,
    }
    past = _patch(http, location, data[64:] + b"extra", 64)
    assert past.status_code == 413
    assert past.json()["error"] == (
        f"The body goes past Upload-Length ({len(data)} bytes); the upload stays at 64"
    )


def test_a_chunk_over_the_body_cap_is_refused(http: httpx.Client) -> None:
    data = b"\0" * (1024 * 1024 + 1)
    location = _create(http, data, hashlib.sha256(data).hexdigest()).headers["location"]
    answer = _patch(http, location, data, 0)
    assert answer.status_code == 413
    assert answer.json() == {
        "status": "error",
        "error": "Request body too large: this route takes at most 1 MB (--max-body-mb)",
        "error_type": "payload_too_large",
    }


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("HEAD", "/v1/datasets/uploads/..%2F..%2Fetc%2Fpasswd", 404),
        ("PATCH", "/v1/datasets/uploads/..%2F..%2Fsettings", 404),
        ("DELETE", "/v1/datasets/uploads/%2E%2E", 404),
        ("GET", "/v1/datasets/..%2F..%2Fmeta.json", 404),
        ("GET", "/v1/datasets/%2E%2E", 400),
        ("DELETE", "/v1/datasets/%2E%2E", 400),
        ("HEAD", "/v1/datasets/%2e%2e", 400),
    ],
)
def test_ids_that_climb_out_are_refused(
    http: httpx.Client, server: LiveServer, method: str, path: str, status: int
) -> None:
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    answer = http.request(
        method, path, headers=headers, content=b"x" if method == "PATCH" else None
    )
    assert answer.status_code == status
    if method != "HEAD" and status == 400:
        assert answer.json()["error"].startswith(
            "A dataset is named by the sha256 of its file: 64 hex digits, got "
        )


def test_a_filename_that_is_a_path_is_refused(http: httpx.Client, server: LiveServer) -> None:
    data = _npz()
    answer = _create(http, data, hashlib.sha256(data).hexdigest(), name="../../escape.npz")
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        "A dataset's filename must be one plain file name of 1 to 255 printable characters, "
        "without / or \\, got '../../escape.npz'"
    )
    assert not (server.state.datasets.root.parent / "escape.npz").exists()


def test_every_dataset_route_needs_the_token(server: LiveServer) -> None:
    sha = "0" * 64
    with server.http() as anonymous:
        for method, path in [
            ("GET", "/v1/datasets"),
            ("HEAD", f"/v1/datasets/{sha}"),
            ("GET", f"/v1/datasets/{sha}"),
            ("DELETE", f"/v1/datasets/{sha}"),
            ("POST", "/v1/datasets/uploads"),
            ("OPTIONS", "/v1/datasets/uploads"),
            ("HEAD", f"/v1/datasets/uploads/{'a' * 32}"),
            ("PATCH", f"/v1/datasets/uploads/{'a' * 32}"),
        ]:
            answer = anonymous.request(method, path, headers=TUS)
            assert answer.status_code == 401, (method, path)


def test_an_upload_survives_a_server_restart(tmp_path: Path) -> None:
    settings = Settings(model=TINY, seed=0, device="cpu", data_dir=tmp_path / "data")
    data = _npz()
    sha = hashlib.sha256(data).hexdigest()
    live = start_server(settings)
    try:
        with live.http() as http:
            location = _create(http, data, sha).headers["location"]
            assert _patch(http, location, data[:500], 0).status_code == 204
    finally:
        stop_server(live)
    strays = settings.data_root / ".uploads"
    (strays / "left-by-hand").mkdir()
    (strays / f"{'0' * 32}.part").write_bytes(b"an upload without a record")
    live = start_server(settings)
    try:
        assert sorted(p.name for p in strays.iterdir()) == [
            f"{location.rsplit('/', 1)[1]}.json",
            f"{location.rsplit('/', 1)[1]}.part",
        ]
        with live.http() as http:
            again = _create(http, data, sha)  # found by its hash: the same upload
            assert (again.headers["location"], again.headers["upload-offset"]) == (location, "500")
            done = _patch(http, location, data[500:], 500)
            assert (done.status_code, done.headers["corteza-dataset"]) == (204, sha)
            assert http.get(f"/v1/datasets/{sha}").json()["samples"] == 40
    finally:
        stop_server(live)


def test_a_data_folder_that_cannot_be_written_is_a_507(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the folder should be")
    live = start_server(Settings(model=TINY, seed=0, device="cpu", data_dir=tmp_path / "data"))
    try:
        with live.http() as http:
            data = _npz()
            answer = _create(http, data, hashlib.sha256(data).hexdigest())
            assert answer.status_code == 507
            assert answer.json() == {
                "status": "error",
                "error": "The server cannot write its data folder (Not a directory); see its log",
                "error_type": "insufficient_storage",
            }
            assert http.get("/v1/datasets").json()["uploads"] == []
    finally:
        stop_server(live)


@pytest.mark.parametrize("header", ["Upload-Length", "Upload-Offset"])
def test_a_number_with_a_non_ascii_digit_is_a_400(http: httpx.Client, header: str) -> None:
    data = _npz()
    location = "/v1/datasets/uploads"
    if header == "Upload-Offset":
        location = _create(http, data, hashlib.sha256(data).hexdigest()).headers["location"]
    text = {
        **TUS,
        "Upload-Length": str(len(data)),
        "Upload-Metadata": _meta(filename="d.npz", sha256=hashlib.sha256(data).hexdigest()),
        "Content-Type": "application/offset+octet-stream",
    }
    headers = [(k.encode(), v.encode()) for k, v in text.items() if k != header]
    headers.append((header.encode(), b"1\xb9"))  # '1¹' in latin-1: isdigit() yes, int() no
    method = "POST" if header == "Upload-Length" else "PATCH"
    answer = http.request(method, location, headers=headers, content=b"x")
    assert answer.status_code == 400
    assert answer.json() == {
        "status": "error",
        "error": f"{header.lower()} must be a whole number of bytes (at most 18 digits), got '1¹'",
        "error_type": "invalid_request",
    }


def test_an_upload_receiving_a_patch_cannot_be_deleted(
    http: httpx.Client, server: LiveServer
) -> None:
    data = _npz()
    location = _create(http, data, hashlib.sha256(data).hexdigest()).headers["location"]
    upload_id = location.rsplit("/", 1)[1]
    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield data[:10]
        release.wait(30)
        yield data[10:20]

    answers: list[httpx.Response] = []
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    patch = threading.Thread(
        target=lambda: answers.append(http.patch(location, content=body(), headers=headers))
    )
    patch.start()
    try:
        wait_until(lambda: upload_id in server.state.dataset_uploads._busy, "the PATCH")
        refused = http.delete(location, headers=TUS)
    finally:
        release.set()
        patch.join(30)
    assert refused.status_code == 423
    assert refused.json() == {
        "status": "error",
        "error": f"Upload {upload_id} is receiving a request; abandon it once that ends",
        "error_type": "upload_conflict",
    }
    assert answers[0].headers["upload-offset"] == "20"
    assert http.head(location, headers=TUS).headers["upload-offset"] == "20"
    assert http.delete(location, headers=TUS).status_code == 204
    assert list(server.state.dataset_uploads.base.iterdir()) == []
