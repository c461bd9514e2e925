"""The seven seed routes against a real uvicorn, with the seed's JSON."""

from __future__ import annotations

import httpx
import torch

from corteza.wire import PROTOCOL_HEADER, PROTOCOL_VERSION
from tests.conftest import TINY, LiveServer
from tests.helpers import samples


def test_health_is_alive(http: httpx.Client) -> None:
    body = http.get("/health").json()
    assert body["alive"] is True
    assert body["uptime_seconds"] >= 0


def test_every_response_carries_the_protocol_version(http: httpx.Client) -> None:
    assert http.get("/health").headers[PROTOCOL_HEADER] == PROTOCOL_VERSION
    assert http.get("/nowhere").headers[PROTOCOL_HEADER] == PROTOCOL_VERSION


def test_info_reports_the_configured_model(http: httpx.Client, live_server: LiveServer) -> None:
    body = http.get("/info").json()
    assert body["input_dim"] == TINY.input_dim
    assert body["model_config"] == TINY.to_dict()
    total = sum(p.numel() for p in live_server.state.trainer.model.parameters())
    assert body["arquitectura"]["parametros_totales"] == total
    assert body["arquitectura"]["capas"]["capa_2a"]["output_dim"] == 2 * TINY.lstm_hidden


def test_train_takes_one_optimizer_step_per_epoch(
    http: httpx.Client, live_server: LiveServer
) -> None:
    response = http.post("/train_layer2", json={"samples": samples(4, 32), "epochs": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "trained"
    assert body["batch_size"] == 4
    assert body["epochs"] == 3
    assert body["step"] == 3
    assert len(body["losses"]) == 3
    assert body["loss"] == body["losses"][-1]
    assert len(body["outputs"]["dendrite_adjustments"]) == 16
    assert len(body["outputs"]["coherence_state"]) == 64
    assert 0.0 <= body["outputs"]["anomaly_prob"] <= 1.0
    assert live_server.state.trainer.step == 3


def test_repeated_training_on_one_batch_lowers_its_loss(http: httpx.Client) -> None:
    batch = {"samples": samples(8, 32, seed=3), "epochs": 1}
    first = http.post("/train_layer2", json=batch).json()["loss"]
    http.post("/train_layer2", json={**batch, "epochs": 30})
    last = http.post("/train_layer2", json=batch).json()["loss"]
    assert last < first * 0.5


def test_sequences_train(http: httpx.Client) -> None:
    seq = [{"input_data": [[0.1] * 32] * 5, "anomaly_label": 1}] * 2
    response = http.post("/train_layer2", json={"samples": seq})
    assert response.status_code == 200
    assert response.json()["batch_size"] == 2


def test_status_counts_what_was_trained(http: httpx.Client) -> None:
    http.post("/train_layer2", json={"samples": samples(4, 32), "epochs": 2})
    http.post("/train_layer2", json={"samples": samples(6, 32)})
    body = http.get("/status").json()
    stats = body["estadisticas"]
    assert body["status"] == "online"
    assert body["torch_version"] == torch.__version__
    assert stats["total_muestras"] == 10
    assert stats["total_batches"] == 2
    assert stats["step"] == 3
    assert stats["dispositivo"] == "CPU"
    assert stats["samples_per_second"] > 0
    assert stats["best_loss"] <= stats["loss_promedio_global"] * 2
    assert body["queue_depth"] == 0


def test_feedback_is_counted(http: httpx.Client) -> None:
    adjustments = [0.01] * 16
    first = http.post(
        "/feedback_dendritas", json={"ajustes_aplicados": adjustments, "validacion": True}
    )
    assert first.status_code == 200
    assert first.json()["status"] == "feedback_recibido"
    second = http.post(
        "/feedback_dendritas",
        json={"ajustes_aplicados": adjustments, "validacion": False, "timestamp": "now"},
    )
    feedback = second.json()["estadisticas"]["feedback"]
    assert feedback == {"recibido": 2, "exitoso": 1, "tasa_exito": 0.5, "dendrite_loss": None}
    assert http.get("/metricas").json()["feedback_tasa_exito"] == 0.5


def test_metricas_reports_no_data_before_three_batches(http: httpx.Client) -> None:
    http.post("/train_layer2", json={"samples": samples(2, 32)})
    body = http.get("/metricas").json()
    assert body["tendencia"] == "sin_datos"
    assert len(body["ultimos_20_losses"]) == 1


def test_metricas_sees_a_falling_loss(http: httpx.Client) -> None:
    batch = {"samples": samples(8, 32, seed=5), "epochs": 5}
    for _ in range(6):
        http.post("/train_layer2", json=batch)
    body = http.get("/metricas").json()
    assert body["tendencia"] == "mejorando"
    assert body["slope"] < 0
    assert len(body["ultimos_20_losses"]) == 6


def test_metricas_counts_samples_detected_as_anomalies(http: httpx.Client) -> None:
    batch = {"samples": samples(4, 32, label=1), "epochs": 40}
    http.post("/train_layer2", json=batch)  # learns to say "anomaly" to these
    http.post("/train_layer2", json={**batch, "epochs": 1})
    assert http.get("/metricas").json()["anomalias_detectadas"] >= 4


def test_diagnostico_leaves_training_untouched(http: httpx.Client, live_server: LiveServer) -> None:
    before = {k: v.clone() for k, v in live_server.state.trainer.model.state_dict().items()}
    body = http.post("/diagnostico").json()
    assert body == {
        "status": "diagnostico_ok",
        "test_input_shape": [2, 1, 32],
        "outputs_shapes": {"anomaly": [2, 1], "dendrites": [2, 16], "coherence": [2, 64]},
        "gpu_info": {"cuda": False, "device": "CPU"},
    }
    after = live_server.state.trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert live_server.state.trainer.model.training
    assert http.get("/status").json()["estadisticas"]["total_batches"] == 0


def test_docs_and_redoc_are_served(http: httpx.Client) -> None:
    assert "swagger" in http.get("/docs").text.lower()
    assert "redoc" in http.get("/redoc").text.lower()
    paths = http.get("/openapi.json").json()["paths"]
    for route in (
        "/train_layer2",
        "/feedback_dendritas",
        "/status",
        "/health",
        "/info",
        "/diagnostico",
        "/metricas",
    ):
        assert route in paths
    body = paths["/train_layer2"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["samples"]
