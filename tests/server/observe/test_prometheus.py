"""``GET /metrics``: scraped from a real server, parsed with Prometheus' own parser."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import samples

BATCH = 4


def scrape(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def feedback(http: httpx.Client, validated: bool) -> None:
    body = {"ajustes_aplicados": [0.0] * TINY.dendrite_dim, "validacion": validated}
    assert http.post("/feedback_dendritas", json=body).status_code == 200


def test_training_counters_and_gauges(live_server: LiveServer, http: httpx.Client) -> None:
    k = 3
    for i in range(k):
        body = {"samples": samples(BATCH, TINY.input_dim, seed=i)}
        assert http.post("/train_layer2", json=body).status_code == 200
    feedback(http, True)
    feedback(http, False)
    feedback(http, False)
    metrics = scrape(http)
    stats = live_server.state.stats
    assert metrics[("corteza_samples_total", ())] == k * BATCH
    assert metrics[("corteza_batches_total", ())] == k
    assert metrics[("corteza_feedback_total", (("validated", "true"),))] == 1
    assert metrics[("corteza_feedback_total", (("validated", "false"),))] == 2
    assert metrics[("corteza_loss", ())] == pytest.approx(stats.last_loss)
    assert metrics[("corteza_best_loss", ())] == pytest.approx(stats.best_loss)
    assert metrics[("corteza_step", ())] == k
    assert metrics[("corteza_queue_depth", ())] == 0
    assert metrics[("corteza_gpu_memory_bytes", ())] == 0  # a CPU server
    assert metrics[("corteza_batch_seconds_count", ())] == k
    assert metrics[("corteza_batch_seconds_bucket", (("le", "+Inf"),))] == k
    assert 0 < metrics[("corteza_batch_seconds_sum", ())] < 60


def test_http_requests_by_route_template_and_status(http: httpx.Client) -> None:
    assert http.post("/train_layer2", json={"samples": samples(2, 3)}).status_code == 422
    assert http.get("/v1/runs/nosuchrun").status_code == 404
    assert http.get("/v1/runs/another").status_code == 404
    assert http.get("/no/such/page").status_code == 404
    assert http.delete("/health").status_code == 405
    assert http.get("/metricas").json()["ultimos_20_losses"] == []  # the seed's route, untouched
    metrics = scrape(http)

    def requests(route: str, method: str, status: int) -> float:
        labels = (("method", method), ("route", route), ("status", str(status)))
        return metrics[("corteza_http_requests_total", labels)]

    assert requests("/train_layer2", "POST", 422) == 1
    assert requests("/v1/runs/{run_id}", "GET", 404) == 2  # the template, not the raw path
    assert requests("unmatched", "GET", 404) == 1
    assert requests("/health", "DELETE", 405) == 1
    assert requests("/metricas", "GET", 200) == 1
    assert not any("nosuchrun" in str(labels) for _, labels in metrics)
    duration = (("method", "POST"), ("route", "/train_layer2"))
    assert metrics[("corteza_http_request_duration_seconds_count", duration)] == 1


def test_each_app_has_its_own_registry(live_server: LiveServer, http: httpx.Client) -> None:
    assert http.post("/train_layer2", json={"samples": samples(2, TINY.input_dim)}).is_success
    other = start_server(Settings(model=TINY, seed=0))
    try:
        with other.http() as fresh:
            assert scrape(fresh)[("corteza_batches_total", ())] == 0
    finally:
        stop_server(other)
    assert scrape(http)[("corteza_batches_total", ())] == 1
