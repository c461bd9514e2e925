"""A pull names one checkpoint and gets exactly its files, whatever the server saves meanwhile."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from corteza.server import Settings
from corteza.server.checkpoints.store import list_checkpoints
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import samples


@pytest.fixture
def saving(tmp_path: Path) -> Iterator[LiveServer]:
    """A server keeping one checkpoint, trained on a batch and saved."""
    settings = Settings(
        model=TINY, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1, checkpoint_keep=1
    )
    live = start_server(settings)
    try:
        _train(live, range(1))
        yield live
    finally:
        stop_server(live)


def _train(live: LiveServer, seqs: range) -> None:
    with live.http() as http:
        for seq in seqs:
            body = {"samples": samples(4, TINY.input_dim, seed=seq), "run_id": "p", "seq": seq}
            assert http.post("/train_layer2", json=body).status_code == 200


def test_a_listed_checkpoint_is_served_whole_after_later_saves(saving: LiveServer) -> None:
    with saving.http() as http:
        listing = http.get("/v1/checkpoint").json()
        name = listing["checkpoint"]
        _train(saving, range(1, 4))  # three saves with keep=1: the listed one is pinned
        assert http.get("/v1/checkpoint").json()["checkpoint"] != name
        files = {
            file: http.get(f"/v1/checkpoints/{name}/files/{file}")
            for file in [*listing["files"], "MANIFEST.json"]
        }
    for file, response in files.items():
        assert response.status_code == 200, file
        assert response.headers["X-Corteza-Checkpoint"] == name
        digest = hashlib.sha256(response.content).hexdigest()
        if file == "MANIFEST.json":
            assert digest == listing["manifest_sha256"]
        else:
            assert digest == listing["files"][file]["sha256"]
    # The pin outlives the download for a while, then a later save prunes it as usual.
    assert (saving.state.checkpointer.root / name).is_dir()  # type: ignore[operator]


def test_a_pin_that_expired_lets_the_checkpoint_go_and_it_is_a_404(saving: LiveServer) -> None:
    with saving.http() as http:
        name = http.get("/v1/checkpoint").json()["checkpoint"]
        saving.state.checkpointer.pin(name, seconds=0.0)  # as if the download ended long ago
        _train(saving, range(1, 2))
        gone = http.get(f"/v1/checkpoints/{name}/files/model.safetensors")
        never = http.get("/v1/checkpoints/ckpt-000000000001-1-000000001/files/state.json")
        odd = http.get("/v1/checkpoints/..%2F..%2Fetc/files/passwd")
    root = saving.state.checkpointer.root
    assert root is not None and not (root / name).exists()
    assert gone.status_code == 404
    assert gone.json() == {
        "status": "error",
        "error": f"Checkpoint {name!r} is not on this server (pruned, or never saved): pull again",
        "error_type": "not_found",
    }
    assert never.status_code == 404
    assert odd.status_code == 404


def test_a_file_pruned_under_the_latest_route_is_a_404_not_a_500(saving: LiveServer) -> None:
    path = list_checkpoints(saving.state.checkpointer.root)[0]  # type: ignore[arg-type]
    (path / "model.safetensors").unlink()  # a prune caught halfway
    with saving.http() as http:
        response = http.get("/v1/checkpoint/files/model.safetensors")
        shutil.rmtree(path)
        listing = http.get("/v1/checkpoint")
    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"
    assert listing.status_code == 404
    assert listing.json()["error"] == (
        f"Checkpoint {path.name!r} is not on this server (pruned, or never saved): pull again"
    )


def test_only_files_the_manifest_lists_are_served(saving: LiveServer) -> None:
    with saving.http() as http:
        name = http.get("/v1/checkpoint").json()["checkpoint"]
        response = http.get(f"/v1/checkpoints/{name}/files/..%2F..%2Fsecret")
    assert response.status_code == 404
