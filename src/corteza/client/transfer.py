"""Checkpoints between the server and this machine: pull (download) and push (upload).

Files travel one by one: downloads are streamed to disk and checked against
the manifest's sha256; uploads go in chunks of at most 64 MiB (tunnels refuse
bodies over 100 MB), then the server verifies the whole checkpoint against its
model before it continues from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx

from corteza.client.errors import InvalidDataError, ProtocolError, raise_for_error

PULL_PATH = "/v1/checkpoint"
PUSH_PATH = "/v1/checkpoint/uploads"
MANIFEST = "MANIFEST.json"
CHUNK = 64 * 1024 * 1024


def _check(response: httpx.Response) -> Any:
    raise_for_error(response)
    return response.json()


def pull_checkpoint(http: httpx.Client, dest: Path) -> Path:
    """Download the server's latest checkpoint into ``dest/<name>/``; returns that folder."""
    listing = _check(http.get(PULL_PATH))
    folder = dest / str(listing["checkpoint"])
    partial = folder.with_name(folder.name + ".part")
    partial.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = listing["files"]
    for name, meta in files.items():
        if "/" in name or name.startswith("."):
            raise ProtocolError(f"the server listed an unsafe file name {name!r}")
        digest = hashlib.sha256()
        with http.stream("GET", f"/v1/checkpoint/files/{name}") as response:
            if response.is_error:
                response.read()
                _check(response)
            with (partial / name).open("wb") as out:
                for block in response.iter_bytes(1 << 20):
                    out.write(block)
                    digest.update(block)
        if digest.hexdigest() != meta["sha256"]:
            raise ProtocolError(f"{name} arrived corrupted (sha256 differs); pull again")
    manifest = http.get(f"/v1/checkpoint/files/{MANIFEST}")
    (partial / MANIFEST).write_bytes(manifest.content)
    os.replace(partial, folder)
    return folder


def push_checkpoint(http: httpx.Client, path: Path) -> dict[str, Any]:
    """Upload a checkpoint folder; the server checks it against its model, then continues."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise InvalidDataError(
            f"{path} is not a checkpoint folder (no {MANIFEST})", error_type="invalid_checkpoint"
        )
    names = [*json.loads(manifest_path.read_text()).get("files", {}), MANIFEST]
    upload = _check(http.post(PUSH_PATH))["upload_id"]
    for name in names:
        file = path / name
        if not file.is_file():
            raise InvalidDataError(f"{file} is missing", error_type="invalid_checkpoint")
        total = file.stat().st_size
        with file.open("rb") as source:
            offset = 0
            while True:
                block = source.read(CHUNK)
                if not block and offset:
                    break
                end = offset + max(len(block), 1) - 1
                _check(
                    http.put(
                        f"/v1/checkpoint/uploads/{upload}/{name}",
                        content=block,
                        headers={"Content-Range": f"bytes {offset}-{end}/{total}"},
                    )
                )
                offset += len(block)
                if not block:
                    break
    result: dict[str, Any] = _check(http.post(f"/v1/checkpoint/uploads/{upload}/commit"))
    return result
