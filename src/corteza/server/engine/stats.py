"""Training statistics: the seed's fields plus step, throughput, best loss and trend.

The worker thread writes, request handlers read; one lock keeps snapshots whole.
Every number kept here is finite: an update carrying NaN or Inf is refused whole
(ValueError, nothing changed), so neither ``/status`` nor a checkpoint's
``state.json`` can ever hold one.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from corteza.server.engine.trainer import TrainResult

RECENT_LOSSES = 100  # the seed's "loss_promedio_ultimos_100"
THROUGHPUT_WINDOW = 20  # batches in the samples/s figure
MAX_COUNT = 2**63  # a saved count above this is not one this server could have made
TREND_TOLERANCE = 0.02  # |fitted change over the window| / mean loss below this is "estable"


def loss_trend(losses: list[float]) -> tuple[str, float | None]:
    """Trend of a loss series from its least-squares slope.

    Returns ``(label, slope)``: ``mejorando`` (falling), ``empeorando``
    (rising) or ``estable`` when the fitted line moves less than 2% of the
    mean loss across the window; ``sin_datos`` with fewer than 3 points.
    """
    if len(losses) < 3:
        return "sin_datos", None
    y = np.asarray(losses, dtype=np.float64)
    x = np.arange(len(y), dtype=np.float64)
    x -= x.mean()
    slope = float((x * (y - y.mean())).sum() / (x * x).sum())
    scale = abs(float(y.mean())) or 1.0
    change = slope * (len(y) - 1) / scale
    if change < -TREND_TOLERANCE:
        return "mejorando", slope
    if change > TREND_TOLERANCE:
        return "empeorando", slope
    return "estable", slope


class TrainingStats:
    """Counters and windows over everything the server trained."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.started = time.monotonic()
        self.total_samples = 0
        self.total_batches = 0
        self.step = 0
        self.loss_sum = 0.0
        self.anomaly_prob_sum = 0.0
        self.anomalies_detected = 0
        self.best_loss: float | None = None
        self.last_loss: float | None = None
        self.recent_losses: deque[float] = deque(maxlen=RECENT_LOSSES)
        self._throughput: deque[tuple[int, float]] = deque(maxlen=THROUGHPUT_WINDOW)
        self.feedback_received = 0
        self.feedback_validated = 0
        self.dendrite_loss: float | None = None  # of the last validated feedback

    def reset(self) -> None:
        """Start the statistics afresh (the model and its runs are not statistics)."""
        with self._lock:
            self._clear()

    def record_batch(self, result: TrainResult) -> None:
        """Count a trained batch; ValueError, nothing counted, for a non-finite figure."""
        figures = [*result.losses, result.seconds, float(result.probabilities.mean())]
        if not result.losses or not all(math.isfinite(v) for v in figures):
            raise ValueError(f"refusing statistics of a batch with non-finite figures: {figures}")
        with self._lock:
            self.total_samples += result.batch_size
            self.total_batches += 1
            self.step = result.step
            self.loss_sum += result.loss
            self.recent_losses.append(result.loss)
            self.last_loss = result.loss
            if self.best_loss is None or result.loss < self.best_loss:
                self.best_loss = result.loss
            self.anomaly_prob_sum += float(result.probabilities.mean())
            self.anomalies_detected += int((result.probabilities > 0.5).sum())
            self._throughput.append((result.batch_size * result.epochs, result.seconds))

    _SAVED = (
        "total_samples",
        "total_batches",
        "step",
        "loss_sum",
        "anomaly_prob_sum",
        "anomalies_detected",
        "best_loss",
        "last_loss",
        "feedback_received",
        "feedback_validated",
        "dendrite_loss",
    )

    def to_json(self) -> dict[str, Any]:
        """The counters a checkpoint keeps, so statistics survive restarts."""
        with self._lock:
            data: dict[str, Any] = {name: getattr(self, name) for name in self._SAVED}
            data["recent_losses"] = list(self.recent_losses)
            data["elapsed_seconds"] = time.monotonic() - self.started
            return data

    _OPTIONAL = frozenset({"best_loss", "last_loss", "dendrite_loss"})
    _FLOATS = frozenset({"loss_sum", "anomaly_prob_sum"})

    def load_json(self, data: dict[str, Any]) -> None:
        """Restore what :meth:`to_json` saved; ValueError for a value of the wrong kind
        (nothing restored) or for counters that could not be served as JSON (then the
        statistics start afresh)."""
        saved = {name: data[name] for name in self._SAVED if name in data}
        recent = list(data.get("recent_losses", []))
        elapsed = data.get("elapsed_seconds", 0.0)
        for name, value in [*saved.items(), ("elapsed_seconds", elapsed)]:
            if value is None and name in self._OPTIONAL:
                continue
            if name in self._OPTIONAL | self._FLOATS or name == "elapsed_seconds":
                if not _is_finite(value):
                    raise ValueError(f"stats.{name} must be a finite number, got {value!r:.40}")
            elif (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT
            ):
                raise ValueError(f"stats.{name} must be a count, got {value!r:.40}")
        if saved.get("feedback_validated", 0) > saved.get("feedback_received", 0):
            raise ValueError("stats.feedback_validated must not exceed stats.feedback_received")
        if not all(_is_finite(v) for v in recent):
            raise ValueError("stats.recent_losses must hold finite numbers")
        with self._lock:
            for name, value in saved.items():
                setattr(self, name, value)
            self.recent_losses.clear()
            self.recent_losses.extend(float(v) for v in recent)
            self.started = time.monotonic() - float(elapsed)
        try:  # what /status and /metricas would answer must be valid JSON
            json.dumps([self.snapshot(), self.metrics(RECENT_LOSSES)], allow_nan=False)
        except (ArithmeticError, ValueError) as exc:
            self.reset()
            raise ValueError(f"stats cannot be served: {exc}") from exc

    def record_feedback(self, validated: bool, dendrite_loss: float | None = None) -> None:
        """Count a feedback; ValueError, nothing counted, for a non-finite loss."""
        if dendrite_loss is not None and not math.isfinite(dendrite_loss):
            raise ValueError(f"refusing a non-finite dendrite loss: {dendrite_loss}")
        with self._lock:
            self.feedback_received += 1
            self.feedback_validated += int(validated)
            if dendrite_loss is not None:
                self.dendrite_loss = dendrite_loss

    def _success_rate(self) -> float:
        if not self.feedback_received:
            return 0.0
        return self.feedback_validated / self.feedback_received

    def snapshot(self) -> dict[str, Any]:
        """Counters in the seed's ``estadisticas`` shape (device fields left to the caller)."""
        with self._lock:
            batches = self.total_batches
            recent = list(self.recent_losses)
            samples = sum(n for n, _ in self._throughput)
            seconds = sum(s for _, s in self._throughput)
            return {
                "total_muestras": self.total_samples,
                "total_batches": batches,
                "loss_promedio_global": self.loss_sum / batches if batches else 0.0,
                "loss_promedio_ultimos_100": sum(recent) / len(recent) if recent else 0.0,
                "anomalia_media": self.anomaly_prob_sum / batches if batches else 0.0,
                "tiempo_transcurrido_seg": round(time.monotonic() - self.started, 6),
                "feedback": {
                    "recibido": self.feedback_received,
                    "exitoso": self.feedback_validated,
                    "tasa_exito": self._success_rate(),
                    "dendrite_loss": self.dendrite_loss,
                },
                "step": self.step,
                "samples_per_second": samples / seconds if seconds > 0 else 0.0,
                "best_loss": self.best_loss,
                "last_loss": self.last_loss,
            }

    def metrics(self, window: int) -> dict[str, Any]:
        """The ``/metricas`` payload: last 20 losses and the trend over ``window`` batches."""
        with self._lock:
            recent = list(self.recent_losses)
            detected = self.anomalies_detected
            rate = self._success_rate()
            received = self.feedback_received
            dendrite_loss = self.dendrite_loss
        label, slope = loss_trend(recent[-window:])
        return {
            "ultimos_20_losses": recent[-20:],
            "tendencia": label,
            "anomalias_detectadas": detected,
            "feedback_tasa_exito": rate,
            "feedback_received": received,
            "dendrite_loss": dendrite_loss,
            "slope": slope,
            "window": min(window, len(recent)),
        }


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
