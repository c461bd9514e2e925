"""The CUDA paths, on a GPU (skipped without one; every other test pins the CPU).

The trainer on a CUDA device behind a real server (its precision policy and staging:
test_gpu_engine.py), and the CUDA RNG state that checkpoints save and a resumed server restores.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from corteza.server import Settings
from tests.conftest import TINY, needs_cuda, start_server, stop_server
from tests.helpers import samples

pytestmark = [pytest.mark.cuda, needs_cuda]


def _settings(**extra: object) -> Settings:
    return Settings(model=TINY, seed=0, lr=1e-3, device="cuda", **extra)


def test_the_trainer_trains_on_the_gpu() -> None:
    live = start_server(_settings())
    try:
        trainer = live.state.trainer
        assert trainer.device.type == "cuda"
        assert {p.device.type for p in trainer.model.parameters()} == {"cuda"}
        with live.http() as http:
            trained = http.post("/train_layer2", json={"samples": samples(8, TINY.input_dim)})
            assert trained.status_code == 200, trained.text
            predicted = http.post("/v1/predict", json={"inputs": [[0.1] * TINY.input_dim]})
            stats = http.get("/status").json()["estadisticas"]
            diagnosis = http.post("/diagnostico").json()
    finally:
        stop_server(live)
    assert trained.json()["step"] == 1 and math.isfinite(trained.json()["loss"])
    assert predicted.status_code == 200
    assert 0.0 <= predicted.json()["anomaly_prob"][0] <= 1.0
    assert stats["dispositivo"] == "GPU"
    assert stats["device"].startswith("cuda")
    assert stats["device_name"] == torch.cuda.get_device_name(0)
    assert stats["gpu_memory_reserved_mb"] > 0  # the caching allocator holds a block at least
    assert diagnosis["gpu_info"] == {"cuda": True, "device": "GPU"}


def test_checkpoints_carry_the_cuda_rng_state_and_a_resume_restores_it(tmp_path: Path) -> None:
    first = start_server(_settings(checkpoint_dir=tmp_path))
    try:
        with first.http() as http:  # dropout on the GPU draws from the CUDA generator
            body = {"samples": samples(8, TINY.input_dim)}
            assert http.post("/train_layer2", json=body).status_code == 200
            assert http.post("/v1/checkpoint").status_code == 200
    finally:
        stop_server(first)
    second = start_server(_settings(checkpoint_dir=tmp_path))  # resumes the newest
    try:
        loaded = second.state.checkpointer.last_path
        assert loaded is not None
        saved = load_file(loaded / "rng.safetensors")
        devices = torch.cuda.device_count()
        assert set(saved) == {"rng.cpu", *(f"rng.cuda.{i}" for i in range(devices))}
        restored = torch.cuda.get_rng_state_all()
        for i in range(devices):
            assert torch.equal(restored[i], saved[f"rng.cuda.{i}"])
        # Not merely the seed's state, which the second server set before it resumed.
        torch.cuda.manual_seed_all(0)
        assert not torch.equal(torch.cuda.get_rng_state(0), saved["rng.cuda.0"])
    finally:
        stop_server(second)
