"""Checkpoints as files by name: made by the served model, edited, pushed back."""

from __future__ import annotations

import hashlib
import json

import httpx

from tests.conftest import TINY
from tests.helpers import samples


def with_manifest(files: dict[str, bytes]) -> dict[str, bytes]:
    """``files`` with a manifest that matches them, so the checks past the sha256 run."""
    entries = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        for name, data in files.items()
        if name != "MANIFEST.json"
    }
    return {**files, "MANIFEST.json": json.dumps({"format": 1, "files": entries}).encode()}


def saved_checkpoint(http: httpx.Client, run_id: str) -> dict[str, bytes]:
    """Train a batch of ``run_id``, save, and download the checkpoint's files."""
    body = {"samples": samples(4, TINY.input_dim), "run_id": run_id, "seq": 0}
    assert http.post("/train_layer2", json=body).status_code == 200
    assert http.post("/v1/checkpoint").status_code == 200
    listed = http.get("/v1/checkpoint").json()["files"]
    return {name: http.get(f"/v1/checkpoint/files/{name}").content for name in listed}


def push(http: httpx.Client, files: dict[str, bytes]) -> httpx.Response:
    """Upload ``files`` (one chunk each) and commit them; the commit's response."""
    upload_id = http.post("/v1/checkpoint/uploads").json()["upload_id"]
    for name, content in files.items():
        put = http.put(f"/v1/checkpoint/uploads/{upload_id}/{name}", content=content)
        assert put.status_code == 200, put.text
    return http.post(f"/v1/checkpoint/uploads/{upload_id}/commit")
