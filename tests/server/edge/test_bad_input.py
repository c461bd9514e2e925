"""Bad input: a real status, the exact message, an error_type, and the model untouched."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.helpers import assert_same_model, samples, snapshot_model

GOOD = samples(3, 32)
ROW = [0.1] * 32


def _with(index: int, **changes: Any) -> list[dict[str, Any]]:
    batch = [dict(s) for s in GOOD]
    batch[index] = {**batch[index], **changes}
    return batch


CASES = [
    pytest.param(
        {"samples": _with(2, input_data=[0.1, 0.2, 0.3])},
        422,
        "Input dimension mismatch: expected 32D, got 3D",
        "dimension_mismatch",
        2,
        id="wrong-width-in-last-sample",
    ),
    pytest.param(
        {"samples": _with(0, input_data=[0.1] * 1600)},
        422,
        "Input dimension mismatch: expected 32D, got 1600D",
        "dimension_mismatch",
        0,
        id="seed-width-on-a-tiny-model",
    ),
    pytest.param(
        {"samples": _with(1, anomaly_label=2)},
        422,
        "Invalid anomaly_label: sample 1 has 2, expected 0 or 1",
        "invalid_label",
        1,
        id="label-2",
    ),
    pytest.param(
        {"samples": _with(2, anomaly_label=-1)},
        422,
        "Invalid anomaly_label: sample 2 has -1, expected 0 or 1",
        "invalid_label",
        2,
        id="label-negative",
    ),
    pytest.param(
        {"samples": []},
        422,
        "Empty batch: send at least one sample",
        "empty_batch",
        None,
        id="empty",
    ),
    pytest.param(
        {
            "samples": [
                {"input_data": [ROW, ROW], "anomaly_label": 0},
                {"input_data": [ROW], "anomaly_label": 1},
            ]
        },
        422,
        "Ragged batch: sample 1 has 1 time step, sample 0 has 2 time steps",
        "ragged_batch",
        1,
        id="ragged-sequences",
    ),
    pytest.param(
        {"samples": GOOD, "epochs": 0},
        422,
        "Invalid request: epochs: Input should be greater than or equal to 1",
        "invalid_request",
        None,
        id="zero-epochs",
    ),
    pytest.param(
        {"samples": [{"input_data": ROW}]},
        422,
        "Invalid request: samples.0.anomaly_label: Field required",
        "invalid_request",
        None,
        id="missing-label",
    ),
    pytest.param(
        {"samples": [{"input_data": "text", "anomaly_label": 0}]},
        422,
        "Invalid request: samples.0.input_data: Input should be a valid array",
        "invalid_request",
        None,
        id="input-not-a-list",
    ),
]


@pytest.mark.parametrize(("payload", "status", "message", "error_type", "sample"), CASES)
def test_bad_batches_are_refused_before_the_model(
    live_server: LiveServer,
    http: httpx.Client,
    payload: dict[str, Any],
    status: int,
    message: str,
    error_type: str,
    sample: int | None,
) -> None:
    http.post("/train_layer2", json={"samples": GOOD})  # optimizer state exists
    before = snapshot_model(live_server.state)
    response = http.post("/train_layer2", json=payload)
    assert response.status_code == status
    body = response.json()
    assert body["status"] == "error"
    assert body["error"] == message
    assert body["error_type"] == error_type
    assert body.get("sample") == sample
    assert_same_model(before, snapshot_model(live_server.state))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e39"])
def test_non_finite_values_are_refused_and_the_model_untouched(
    live_server: LiveServer, http: httpx.Client, literal: str
) -> None:
    http.post("/train_layer2", json={"samples": GOOD})
    before = snapshot_model(live_server.state)
    good_row = ", ".join(["0.5"] * 32)
    bad_row = ", ".join(["0.5"] * 31 + [literal])
    body = (
        '{"samples": ['
        f'{{"input_data": [{good_row}], "anomaly_label": 0}}, '
        f'{{"input_data": [{bad_row}], "anomaly_label": 1}}]}}'
    )
    response = http.post(
        "/train_layer2", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json() == {
        "status": "error",
        "error": "Non-finite input: sample 1 contains NaN or Inf",
        "error_type": "non_finite_input",
        "sample": 1,
    }
    assert_same_model(before, snapshot_model(live_server.state))


def test_malformed_json_is_a_400(live_server: LiveServer, http: httpx.Client) -> None:
    before = snapshot_model(live_server.state)
    response = http.post(
        "/train_layer2", content=b'{"samples": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error_type"] == "malformed_body"
    assert response.json()["error"].startswith("Request body is not valid JSON: ")
    assert_same_model(before, snapshot_model(live_server.state))


@pytest.mark.parametrize(
    ("adjustments", "message", "error_type"),
    [
        ([0.1] * 3, "ajustes_aplicados must have 16 values, got 3", "invalid_request"),
        ([0.1] * 17, "ajustes_aplicados must have 16 values, got 17", "invalid_request"),
    ],
)
def test_bad_feedback_is_refused_and_not_counted(
    live_server: LiveServer,
    http: httpx.Client,
    adjustments: list[float],
    message: str,
    error_type: str,
) -> None:
    before = snapshot_model(live_server.state)
    response = http.post(
        "/feedback_dendritas", json={"ajustes_aplicados": adjustments, "validacion": True}
    )
    assert response.status_code == 422
    assert response.json() == {"status": "error", "error": message, "error_type": error_type}
    assert live_server.state.stats.feedback_received == 0
    assert_same_model(before, snapshot_model(live_server.state))


def test_feedback_with_nan_is_refused(http: httpx.Client, live_server: LiveServer) -> None:
    values = ", ".join(["0.1"] * 15 + ["NaN"])
    response = http.post(
        "/feedback_dendritas",
        content=f'{{"ajustes_aplicados": [{values}], "validacion": true}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "ajustes_aplicados contains NaN or Inf"
    assert live_server.state.stats.feedback_received == 0


def test_unknown_route_and_wrong_method(http: httpx.Client) -> None:
    missing = http.get("/entrenar")
    assert missing.status_code == 404
    assert missing.json() == {"status": "error", "error": "Not Found", "error_type": "not_found"}
    wrong = http.get("/train_layer2")
    assert wrong.status_code == 405
    assert wrong.json()["error_type"] == "method_not_allowed"
