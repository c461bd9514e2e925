"""The /metricas trend comes from a least-squares slope, not last-vs-first."""

from __future__ import annotations

import json

import pytest

from corteza.server.engine.stats import TrainingStats, loss_trend


def test_fewer_than_three_points_is_no_data() -> None:
    assert loss_trend([]) == ("sin_datos", None)
    assert loss_trend([1.0, 0.5]) == ("sin_datos", None)


def test_a_falling_series_is_improving() -> None:
    label, slope = loss_trend([1.0, 0.9, 0.8, 0.7])
    assert label == "mejorando"
    assert slope == pytest.approx(-0.1)


def test_a_rising_series_is_worsening() -> None:
    assert loss_trend([0.5, 0.6, 0.7])[0] == "empeorando"


def test_noise_around_a_level_is_stable() -> None:
    assert loss_trend([0.70, 0.71, 0.69, 0.70, 0.71, 0.69])[0] == "estable"


def test_the_slope_ignores_a_lucky_last_point() -> None:
    """Last-vs-first would call this improving; the fitted line says worsening."""
    series = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.45]
    assert series[-1] < series[0]
    assert loss_trend(series)[0] == "empeorando"


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        ({"feedback_received": 10**400}, "stats.feedback_received must be a count"),
        (
            {"feedback_received": 1, "feedback_validated": 2},
            "stats.feedback_validated must not exceed stats.feedback_received",
        ),
        ({"recent_losses": [1e308, 1e308]}, "stats cannot be served"),
        ({"loss_sum": 1e308, "total_batches": 1, "anomaly_prob_sum": -1e308}, None),
    ],
)
def test_counters_that_cannot_be_served_are_refused(
    saved: dict[str, object], message: str | None
) -> None:
    """A pushed checkpoint's statistics must never make /status or /metricas fail."""
    stats = TrainingStats()
    if message is None:  # servable as it is: restored
        stats.load_json(saved)
    else:
        with pytest.raises(ValueError, match=message):
            stats.load_json(saved)
        assert stats.feedback_received == 0
        assert list(stats.recent_losses) == []
    json.dumps([stats.snapshot(), stats.metrics(100)], allow_nan=False)
