"""The precision policy in a running server: fp16 skipped steps, the scaler in checkpoints,
out-of-memory as a 413, and what /status says. On the CPU: fp16 autocast with
``torch.amp.GradScaler("cpu")``, and a scale large enough to overflow, as on a GPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from typer.testing import CliRunner

from corteza.cli.app import app as cli
from corteza.server import Settings
from corteza.server.engine.compilation import CompiledForward
from tests.conftest import TINY, LiveServer, needs_cuda, start_server, stop_server
from tests.helpers import assert_same_model, corteza, samples, snapshot_model
from tests.server.observe.test_events import read_events

# A loss scale that overflows the backward pass, and a backoff that brings it to a
# workable size after one skipped step.
HUGE_SCALE = {
    "scale": 1e38,
    "growth_factor": 2.0,
    "backoff_factor": 2.0**-110,
    "growth_interval": 2000,
    "_growth_tracker": 0,
}
BACKED_OFF = 1e38 * 2.0**-110


def _settings(**kwargs: Any) -> Settings:
    return Settings(model=TINY, seed=0, lr=1e-3, device="cpu", precision="fp16", **kwargs)


@pytest.fixture
def fp16_server() -> Iterator[LiveServer]:
    live = start_server(_settings())
    try:
        yield live
    finally:
        stop_server(live)


def _train(http: httpx.Client, seq: int, run_id: str = "r") -> httpx.Response:
    body = {"samples": samples(8, TINY.input_dim, seed=seq), "run_id": run_id, "seq": seq}
    return http.post("/train_layer2", json=body)


def test_an_overflowing_fp16_step_is_skipped_recorded_once_and_not_applied(
    fp16_server: LiveServer,
) -> None:
    state = fp16_server.state
    state.trainer.mixed.load_state_dict(HUGE_SCALE)
    before = snapshot_model(state)
    with fp16_server.http() as http:
        answer = _train(http, 0).json()
        assert answer["status"] == "skipped"
        assert answer["skipped_steps"] == 1
        assert answer["step"] == 0  # no optimizer step was taken
        after = snapshot_model(state)
        assert after["stats"] == (8, 1, 0)  # the batch counts, as a batch without a step
        assert_same_model({**before, "stats": after["stats"]}, after)  # weights, moments, step
        replay = _train(http, 0).json()
        assert replay["replayed"] is True
        assert replay["status"] == "skipped"
        assert state.stats.total_batches == 1  # recorded once
        assert state.runs.open("r").next_seq == 1
        trained = _train(http, 1).json()  # at the backed-off scale it trains
        assert trained["status"] == "trained"
        assert trained["skipped_steps"] == 0
        assert trained["step"] == 1
        events = read_events(http, 2, types="batch_trained")
    assert [(e["seq"], e["status"], e["skipped_steps"]) for e in events] == [
        (0, "skipped", 1),
        (1, "trained", 0),
    ]


def test_the_scaler_state_survives_a_restart(tmp_path: Path) -> None:
    live = start_server(_settings(checkpoint_dir=tmp_path, checkpoint_every=100))
    try:
        live.state.trainer.mixed.load_state_dict(HUGE_SCALE)
        with live.http() as http:
            assert _train(http, 0).json()["status"] == "skipped"
    finally:
        stop_server(live)  # shutdown saves a checkpoint
    again = start_server(_settings(checkpoint_dir=tmp_path, checkpoint_every=100))
    try:
        assert again.state.trainer.mixed.state_dict()["scale"] == pytest.approx(BACKED_OFF)
        assert again.state.runs.open("r").next_seq == 1
        with again.http() as http:
            answer = _train(http, 1).json()
        assert answer["status"] == "trained"
        assert answer["step"] == 1
    finally:
        stop_server(again)


def test_status_shows_the_precision_and_peak_memory(fp16_server: LiveServer) -> None:
    with fp16_server.http() as http:
        stats = http.get("/status").json()["estadisticas"]
    assert stats["precision"] == "fp16"
    assert stats["peak_memory_mb"] == 0.0  # no CUDA here


def test_validated_feedback_takes_an_fp16_step(fp16_server: LiveServer) -> None:
    with fp16_server.http() as http:
        batch_id = _train(http, 0).json()["batch_id"]
        answer = http.post(
            "/feedback_dendritas",
            json={"ajustes_aplicados": [0.5] * 16, "validacion": True, "batch_id": batch_id},
        ).json()
    assert answer["applied"] is True
    assert answer["dendrite_loss"] >= 0


class _OutOfMemoryForward(CompiledForward):
    """Stands in for a GPU that runs out of memory on batches over four samples."""

    def __call__(self, inputs: torch.Tensor) -> Any:
        if inputs.shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return super().__call__(inputs)


def test_a_batch_too_large_for_the_device_is_a_413_naming_a_size_that_fits(
    live_server: LiveServer,
) -> None:
    state = live_server.state
    state.trainer.forward = _OutOfMemoryForward(state.trainer.model, enabled=False)
    before = snapshot_model(state)
    with live_server.http() as http:
        refused = http.post("/train_layer2", json={"samples": samples(8, TINY.input_dim)})
        assert refused.status_code == 413
        assert refused.json() == {
            "status": "error",
            "error": "A batch of 8 samples does not fit in the memory of this device; nothing "
            "was applied. Send batches of at most 4 samples",
            "error_type": "out_of_memory",
            "fits_batch_size": 4,
        }
        assert_same_model(before, snapshot_model(state))
        fits = http.post("/train_layer2", json={"samples": samples(4, TINY.input_dim)})
        assert fits.status_code == 200  # the worker lives on


def test_an_explicit_precision_the_device_cannot_honour_stops_serve_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on a Mac: MPS is there, and this server runs fp16 on CUDA and the CPU only.
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    result = CliRunner().invoke(cli, ["serve", "--device", "mps", "--precision", "fp16"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --precision fp16 is not available on mps: this server runs fp16 and bf16 on "
        "CUDA and the CPU only; use --precision auto or fp32\n"
    )


@pytest.mark.cuda
@needs_cuda
def test_bf16_on_a_gpu_older_than_ampere_stops_serve_in_one_line() -> None:
    major, minor = torch.cuda.get_device_capability(0)
    if major >= 8:
        pytest.skip(f"this GPU (capability {major}.{minor}) runs bf16")
    result = corteza("serve", "--device", "cuda", "--precision", "bf16", "--port", "0")
    assert result.returncode == 2
    assert result.stderr == (
        "error: --precision bf16 needs a GPU of compute capability 8.0 or newer (A100, L4, "
        f"H100); this one has {major}.{minor}, where bf16 is only emulated: use --precision "
        "fp16 or auto\n"
    )


class _OutOfMemoryAtEpochTwo(CompiledForward):
    """Stands in for a GPU that runs out of memory on the second epoch of a batch."""

    calls = 0

    def __call__(self, inputs: torch.Tensor) -> Any:
        type(self).calls += 1
        if type(self).calls == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return super().__call__(inputs)


def test_out_of_memory_at_epoch_two_records_the_first_and_a_retry_replays_it(
    live_server: LiveServer,
) -> None:
    state = live_server.state
    state.trainer.forward = _OutOfMemoryAtEpochTwo(state.trainer.model, enabled=False)
    body = {"samples": samples(4, TINY.input_dim), "epochs": 3, "run_id": "oom", "seq": 0}
    with live_server.http() as http:
        first = http.post("/train_layer2", json=body)
        after_first = snapshot_model(state)
        retry = http.post("/train_layer2", json=body)
    assert first.status_code == 422
    assert first.json()["error"] == (
        "Out of device memory at epoch 2 of this batch; that step was not applied, the 1 "
        "before it were and count as this batch"
    )
    assert retry.status_code == 200
    assert (retry.json()["replayed"], retry.json()["epochs"]) == (True, 1)
    assert_same_model(after_first, snapshot_model(state))  # the first epoch is not trained twice
    assert (state.trainer.step, state.runs.open("oom").next_seq) == (1, 1)
