"""Pull a checkpoint to this machine, push it to a fresh server, continue the run there.

A pickle pushed as a checkpoint file: tests/security/test_checkpoint_upload.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from corteza.client import Client, InvalidRequestError
from corteza.model import ModelConfig
from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import assert_same_model, samples, snapshot_model


def _trained_server(root: Path, config: ModelConfig = TINY) -> LiveServer:
    live = start_server(Settings(model=config, checkpoint_dir=root, checkpoint_every=100))
    with live.http() as http:
        for seq in range(3):
            body = {"samples": samples(4, config.input_dim, seed=seq), "run_id": "r", "seq": seq}
            assert http.post("/train_layer2", json=body).status_code == 200
        assert http.post("/v1/checkpoint").status_code == 200
    return live


def _rewrite_manifest(folder: Path) -> None:
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    for name in manifest["files"]:
        data = (folder / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))


def test_a_pushed_checkpoint_continues_the_run_on_a_fresh_server(
    tmp_path: Path, live_server: LiveServer
) -> None:
    source = _trained_server(tmp_path / "a")
    try:
        with Client(source.url) as client:
            folder = client.pull(tmp_path / "pulled")
        expected = snapshot_model(source.state)
    finally:
        stop_server(source)
    assert sorted(p.name for p in folder.iterdir()) == [
        "MANIFEST.json",
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    with Client(live_server.url) as client:
        result = client.push(folder)
    assert result["status"] == "loaded"
    assert result["runs"] == {"r": 3}
    assert_same_model(expected, snapshot_model(live_server.state))
    with live_server.http() as http:
        again = {"samples": samples(4, 32, seed=2), "run_id": "r", "seq": 2}
        assert http.post("/train_layer2", json=again).json()["replayed"] is True
        nxt = {"samples": samples(4, 32, seed=3), "run_id": "r", "seq": 3}
        assert http.post("/train_layer2", json=nxt).json()["step"] == 4


def test_a_checkpoint_of_another_shape_is_refused(tmp_path: Path, live_server: LiveServer) -> None:
    source = _trained_server(tmp_path / "a", ModelConfig.tiny(input_dim=48))
    try:
        with Client(source.url) as client:
            folder = client.pull(tmp_path / "pulled")
    finally:
        stop_server(source)
    before = snapshot_model(live_server.state)
    with Client(live_server.url) as client, pytest.raises(InvalidRequestError) as info:
        client.push(folder)
    assert info.value.status == 422
    assert info.value.error_type == "invalid_checkpoint"
    assert str(info.value).startswith("Refused checkpoint: checkpoint does not fit this model: ")
    assert "shape mismatch: capa2.lstm.weight_ih_l0 is [64, 48], the model has [64, 32]" in str(
        info.value
    )
    assert_same_model(before, snapshot_model(live_server.state))


def test_extra_tensors_are_refused(tmp_path: Path, live_server: LiveServer) -> None:
    source = _trained_server(tmp_path / "a")
    try:
        with Client(source.url) as client:
            folder = client.pull(tmp_path / "pulled")
    finally:
        stop_server(source)
    tensors = load_file(folder / "model.safetensors")
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, folder / "model.safetensors")
    _rewrite_manifest(folder)
    before = snapshot_model(live_server.state)
    with Client(live_server.url) as client, pytest.raises(InvalidRequestError) as info:
        client.push(folder)
    assert "unexpected tensors: extra.weight" in str(info.value)
    assert_same_model(before, snapshot_model(live_server.state))


def test_only_checkpoint_files_can_be_uploaded(live_server: LiveServer) -> None:
    with live_server.http() as http:
        upload = http.post("/v1/checkpoint/uploads").json()["upload_id"]
        response = http.put(f"/v1/checkpoint/uploads/{upload}/evil.py", content=b"x")
        assert response.status_code == 422
        assert response.json()["error_type"] == "invalid_checkpoint"
        missing = http.put("/v1/checkpoint/uploads/0123/model.safetensors", content=b"x")
        assert missing.status_code == 404
