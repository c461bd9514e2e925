"""The training worker keeps the event loop free: /health and /status answer mid-training."""

from __future__ import annotations

import threading

import httpx
import pytest

from corteza.server.engine.trainer import TrainResult
from corteza.wire import Batch
from tests.conftest import LiveServer
from tests.helpers import samples


def test_health_and_status_answer_while_a_long_batch_trains(
    live_server: LiveServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is held in the worker until the health checks are done: a long batch that
    cannot end early, on any machine."""
    trainer = live_server.state.trainer
    entered, release = threading.Event(), threading.Event()
    train_batch = trainer.train_batch

    def held(batch: Batch) -> TrainResult:
        entered.set()
        assert release.wait(60), "the test never released the batch"
        return train_batch(batch)

    monkeypatch.setattr(trainer, "train_batch", held)
    result: dict[str, httpx.Response] = {}

    def train() -> None:
        with live_server.http() as client:
            result["train"] = client.post("/train_layer2", json={"samples": samples(64, 32)})

    thread = threading.Thread(target=train)
    thread.start()
    try:
        assert entered.wait(30), "the batch never reached the worker"
        answers = []
        for _ in range(5):
            health = http.get("/health", timeout=5.0)
            status = http.get("/status", timeout=5.0)
            answers.append((health.status_code, status.status_code, "train" in result))
            assert status.json()["queue_depth"] == 1
    finally:
        release.set()
        thread.join(timeout=120)
    assert answers == [(200, 200, False)] * 5  # answered while the batch was in the worker
    assert result["train"].status_code == 200
    assert result["train"].json()["step"] == 1


def test_batches_are_applied_in_order_one_at_a_time(
    live_server: LiveServer, http: httpx.Client
) -> None:
    steps: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        with live_server.http() as client:
            body = client.post("/train_layer2", json={"samples": samples(4, 32), "epochs": 5})
        with lock:
            steps.append(body.json()["step"])

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(steps) == [5, 10, 15, 20, 25, 30]
    assert http.get("/status").json()["estadisticas"]["total_muestras"] == 24
