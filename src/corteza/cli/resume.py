"""Resuming an interrupted ``corteza train``: the same command, on the same server, goes on.

An interrupted run against a server that outlives the command (not a local one)
leaves a note, ``runs/<key>.json`` in corteza's configuration directory, naming
its run id. The key is the data file (path, size, modification time), the
server and the options that shape the batches, so only the same command finds
it. The server holds the run's ``next_seq`` and checks its fingerprint, so a
resumed run trains each remaining batch exactly once; ``--restart`` ignores the
note. A run that finishes removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from corteza.cli.common import console
from corteza.client.saved_server import config_dir

RUNS_DIR = "runs"


def run_key(data: Path, url: str, shape: Mapping[str, object]) -> str:
    """What names a command's run: the file as it is now, the server, the batches' shape."""
    stat = data.stat()
    described = {
        "data": str(data.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "server": url,
        **shape,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def run_for(
    data: Path, url: str | None, shape: Mapping[str, object], *, restart: bool, quiet: bool
) -> tuple[str | None, str | None]:
    """``(key, run_id)`` for a command about to train ``data`` on ``url``; says a resume.

    A local server (``url`` None) forgets its runs when it stops: no key, and the
    server names the run.
    """
    if url is None:
        return None, None
    key = run_key(data, url, shape)
    previous = None if restart else interrupted_run(key)
    if previous is not None and not quiet:
        console.print(
            f"Resuming run {previous}, interrupted before (--restart starts over).",
            highlight=False,
        )
    return key, previous or uuid.uuid4().hex


def _note(key: str) -> Path:
    return config_dir() / RUNS_DIR / f"{key}.json"


def interrupted_run(key: str) -> str | None:
    """The run id an interrupted run of this command left, or None."""
    try:
        run_id = json.loads(_note(key).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) and run_id else None


def remember(key: str, run_id: str) -> None:
    path = _note(key)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps({"run_id": run_id}) + "\n", encoding="utf-8")
    os.replace(partial, path)


def forget(key: str) -> None:
    _note(key).unlink(missing_ok=True)
