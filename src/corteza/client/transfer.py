"""Checkpoints between the server and this machine: pull (download) and push (upload).

A pull asks for the latest checkpoint's name and listing once, then fetches
that checkpoint's files by name (``/v1/checkpoints/{name}/files/{file}``), so
a save on the server meanwhile cannot mix two checkpoints. The manifest comes
first and must match the listing (and its sha256, when the server gives it);
every file must match the manifest's size and sha256. Names from the server
are used as file names only when each is one plain path component (no ``/``,
``\\``, ``..``, leading dot, drive colon or NUL), else the pull is refused.
Files go into a private staging folder inside the destination, each fsynced,
then the folder is renamed into place and the destination fsynced. A folder of
that name already there is returned as it is when it holds the same
checkpoint (same manifest), and refused clearly otherwise.

Uploads go in chunks of at most 64 MiB (tunnels refuse bodies over 100 MB),
then the server verifies the whole checkpoint against its model before it
continues from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx

from corteza.client.errors import InvalidDataError, ProtocolError, raise_for_error
from corteza.client.files import fsync_dir

PULL_PATH = "/v1/checkpoint"
PUSH_PATH = "/v1/checkpoint/uploads"
MANIFEST = "MANIFEST.json"
CHUNK = 64 * 1024 * 1024
STAGING_PREFIX = ".pull-"
MANIFEST_LIMIT = 16 * 1024 * 1024  # bytes a manifest may have
# The files a checkpoint holds; the same tuple as the server's checkpoint store
# (server/checkpoints/store.py and validate.py), kept here so the client needs no server.
CHECKPOINT_FILES = (
    "model.safetensors",
    "optimizer.safetensors",
    "rng.safetensors",
    "state.json",
    MANIFEST,
)


def _check(response: httpx.Response) -> Any:
    raise_for_error(response)
    return response.json()


def safe_name(name: object, what: str) -> str:
    """``name`` when it is one plain path component; ProtocolError otherwise."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 255
        or name.startswith(".")
        or any(c in name for c in "/\\:\0")
    ):
        raise ProtocolError(
            f"the server named {what} {name!r:.80}, which is not one plain file name; "
            "refusing to write it"
        )
    return name


def _fetch(http: httpx.Client, url: str, path: Path, limit: int) -> tuple[str, int]:
    """Stream ``url`` into ``path`` (fsynced); its sha256 and size. ProtocolError, the
    partial file deleted, as soon as more than ``limit`` bytes arrive."""
    digest = hashlib.sha256()
    size = 0
    with http.stream("GET", url) as response:
        if response.is_error:
            response.read()
            _check(response)
        with path.open("wb") as out:
            for block in response.iter_bytes(1 << 20):
                size += len(block)
                if size > limit:
                    out.close()
                    path.unlink(missing_ok=True)
                    raise ProtocolError(
                        f"{path.name} arrived corrupted (more than {limit} bytes); pull again"
                    )
                out.write(block)
                digest.update(block)
            out.flush()
            os.fsync(out.fileno())
    return digest.hexdigest(), size


def pull_checkpoint(http: httpx.Client, dest: Path) -> Path:
    """Download the server's latest checkpoint into ``dest/<name>/``; returns that folder."""
    listing = _check(http.get(PULL_PATH))
    name = safe_name(listing.get("checkpoint"), "its checkpoint")
    files: dict[str, Any] = listing.get("files") or {}
    for file in files:
        safe_name(file, "a checkpoint file")
    # Servers before named downloads serve the latest only (and give no manifest_sha256).
    named = "manifest_sha256" in listing
    base = f"/v1/checkpoints/{name}/files" if named else "/v1/checkpoint/files"
    folder = dest / name
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    try:
        partial = staging / name
        partial.mkdir()
        digest, _ = _fetch(http, f"{base}/{MANIFEST}", partial / MANIFEST, MANIFEST_LIMIT)
        if named and digest != listing["manifest_sha256"]:
            raise ProtocolError(f"{MANIFEST} of {name} arrived corrupted (sha256 differs)")
        try:
            manifest = json.loads((partial / MANIFEST).read_text(encoding="utf-8"))["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"{MANIFEST} of {name} is not a checkpoint manifest") from exc
        if manifest != files:
            raise ProtocolError(f"{MANIFEST} of {name} does not list what the server listed")
        for file, meta in files.items():
            expected = meta.get("bytes")
            if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
                raise ProtocolError(f"{MANIFEST} of {name} gives {file} no size")
            digest, size = _fetch(http, f"{base}/{file}", partial / file, expected)
            if (digest, size) != (meta.get("sha256"), meta.get("bytes")):
                raise ProtocolError(f"{file} arrived corrupted (sha256 differs); pull again")
        fsync_dir(partial)
        if folder.exists():
            if (folder / MANIFEST).is_file() and (folder / MANIFEST).read_bytes() == (
                partial / MANIFEST
            ).read_bytes():
                return folder  # the same checkpoint, pulled before
            raise InvalidDataError(
                f"{folder} already exists and holds something else: move it away or pull "
                "into another folder",
                error_type="destination_exists",
            )
        os.rename(partial, folder)
        fsync_dir(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def push_checkpoint(http: httpx.Client, path: Path) -> dict[str, Any]:
    """Upload a checkpoint folder; the server checks it against its model, then continues."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise InvalidDataError(
            f"{path} is not a checkpoint folder (no {MANIFEST})", error_type="invalid_checkpoint"
        )
    names = [*json.loads(manifest_path.read_text()).get("files", {}), MANIFEST]
    for name in names:
        if safe_name(name, "a checkpoint file") not in CHECKPOINT_FILES:
            raise InvalidDataError(
                f"{manifest_path} lists {name!r:.80}, which is not a checkpoint file",
                error_type="invalid_checkpoint",
            )
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
