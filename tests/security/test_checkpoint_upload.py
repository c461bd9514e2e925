"""A pickle whose loading would create a file, sent everywhere the server takes bytes.

The payloads are real: loading them here creates their canary file (checked first). They
go up as every file of a checkpoint (upload, then commit), under the names pickles usually
carry (``.pt``, ``.bin``...), as the body of every route that takes one, and as a stream
frame. The server answers each with a clean 4xx, its canary never appears, and the model
stays as it was.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from websockets.sync.client import connect

from corteza.wire import PROTOCOL_VERSION
from tests.conftest import LiveServer
from tests.helpers import assert_same_model, snapshot_model
from tests.security.conftest import AUTH
from tests.security.uploads import push, saved_checkpoint, with_manifest

UPLOADABLE = [
    "MANIFEST.json",
    "model.safetensors",
    "optimizer.safetensors",
    "rng.safetensors",
    "state.json",
]
PICKLE_NAMES = ["model.pt", "model.pth", "pytorch_model.bin", "model.pkl", "checkpoint.ckpt"]
CONTENT_TYPES = [
    "application/octet-stream",
    "application/x-corteza-batch",
    "application/json",
    "application/python-pickle",
]
ONLY = (
    "A checkpoint holds only MANIFEST.json, model.safetensors, optimizer.safetensors, "
    "rng.safetensors, state.json; got "
)


class Canary:
    """Unpickling this touches ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return (Path.touch, (self.path,))


def payloads(canary: Path) -> dict[str, bytes]:
    """A plain pickle and a ``torch.save`` file (a zip holding one), both with the canary."""
    saved = io.BytesIO()
    torch.save({"state_dict": Canary(canary)}, saved)
    return {"pickle": pickle.dumps(Canary(canary)), "torch.save": saved.getvalue()}


def test_the_payloads_are_live(tmp_path: Path) -> None:
    for kind, payload in payloads(tmp_path / "canary").items():
        (tmp_path / "canary").unlink(missing_ok=True)
        if kind == "pickle":
            pickle.loads(payload)
        else:
            torch.load(io.BytesIO(payload), weights_only=False)
        assert (tmp_path / "canary").exists(), kind


@pytest.fixture(scope="module")
def checkpoint(secured_http: httpx.Client) -> dict[str, bytes]:
    return saved_checkpoint(secured_http, "canary")


def _refusal(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "error"
    assert body["error_type"]
    return body


def test_a_pickle_is_never_executed_wherever_it_goes(
    secured_server: LiveServer,
    secured_http: httpx.Client,
    checkpoint: dict[str, bytes],
    tmp_path: Path,
    figure: Callable[[str], None],
) -> None:
    canary = tmp_path / "canary"
    before = snapshot_model(secured_server.state)
    uploads = 0
    for kind, payload in payloads(canary).items():
        # As each file of a checkpoint, the manifest agreeing, so the upload is judged whole.
        for name in UPLOADABLE:
            files = {**checkpoint, name: payload}
            files = files if name == "MANIFEST.json" else with_manifest(files)
            body = _refusal(push(secured_http, files))
            assert body["error_type"] == "invalid_checkpoint", (kind, name)
            assert body["error"].startswith(f"Refused checkpoint: {name}"), body["error"]
            uploads += 1
        # Under the names pickles go by: refused before a byte is kept.
        upload_id = secured_http.post("/v1/checkpoint/uploads").json()["upload_id"]
        for name in PICKLE_NAMES:
            put = secured_http.put(f"/v1/checkpoint/uploads/{upload_id}/{name}", content=payload)
            assert put.status_code == 422
            assert put.json()["error"] == f"{ONLY}{name!r}"
            assert put.json()["error_type"] == "invalid_checkpoint"
            uploads += 1
        # As the body of every route that takes one, in every content type.
        spec = secured_http.get("/openapi.json").json()
        routes = [
            (method, path)
            for path, operations in spec["paths"].items()
            for method, operation in operations.items()
            if "requestBody" in operation
        ]
        assert ("post", "/train_layer2") in routes
        for method, path in routes:
            for content_type in CONTENT_TYPES:
                response = secured_http.request(
                    method, path, content=payload, headers={"Content-Type": content_type}
                )
                _refusal(response)
                uploads += 1
        # As a frame of the training stream.
        url = secured_server.url.replace("http://", "ws://") + "/v1/train/stream"
        with connect(url, additional_headers=AUTH) as ws:
            ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": None}))
            assert json.loads(ws.recv(timeout=30))["type"] == "welcome"
            ws.send(payload)
            reply = json.loads(ws.recv(timeout=30))
            assert reply["type"] == "error"
            assert reply["error_type"] == "malformed_body"
            uploads += 1
    executions = int(canary.exists())
    figure(f"pickle-canary: uploads={uploads} executions={executions}")
    assert executions == 0
    assert_same_model(before, snapshot_model(secured_server.state))
