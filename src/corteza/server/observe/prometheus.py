"""``GET /metrics`` for Prometheus, on a registry each app owns.

Counters and gauges are read from the training statistics at scrape time
(they continue from a resumed checkpoint); the batch-time histogram listens
to ``batch_trained`` events; HTTP requests are counted by a pure ASGI
middleware under their route template (``/v1/runs/{run_id}``, never the raw
path; ``unmatched`` when no route matches) and their method (``OTHER`` for any method
but the standard ones), so label values stay few whatever a client sends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corteza.server.engine.device import gpu_memory_mb
from corteza.server.engine.stats import TrainingStats
from corteza.server.engine.trainer import Trainer
from corteza.server.engine.worker import TrainingWorker
from corteza.server.observe.bus import Event

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UNMATCHED = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"

router = APIRouter(tags=["monitoring"])


class TrainingCollector(Collector):
    """Training counters and gauges, read when Prometheus scrapes."""

    def __init__(self, stats: TrainingStats, worker: TrainingWorker, trainer: Trainer) -> None:
        self.stats = stats
        self.worker = worker
        self.trainer = trainer

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield CounterMetricFamily("corteza_samples", "Samples trained.", s.total_samples)
        yield CounterMetricFamily("corteza_batches", "Batches trained.", s.total_batches)
        feedback = CounterMetricFamily(
            "corteza_feedback", "Dendritic feedback received.", labels=["validated"]
        )
        validated = s.feedback_validated
        feedback.add_metric(["true"], validated)
        feedback.add_metric(["false"], s.feedback_received - validated)
        yield feedback
        for name, text, value in (
            ("corteza_loss", "Loss of the latest batch.", s.last_loss),
            ("corteza_best_loss", "Lowest batch loss.", s.best_loss),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, text, value)
        yield GaugeMetricFamily("corteza_step", "Optimizer steps taken.", s.step)
        yield GaugeMetricFamily(
            "corteza_queue_depth", "Jobs waiting for the training worker.", self.worker.queue_depth
        )
        allocated, _ = gpu_memory_mb(self.trainer.device)
        yield GaugeMetricFamily(
            "corteza_gpu_memory_bytes", "GPU memory allocated by tensors.", allocated * 2**20
        )


class ServerMetrics:
    """The app's registry: training collector, batch-time histogram, HTTP metrics."""

    def __init__(self, stats: TrainingStats, worker: TrainingWorker, trainer: Trainer) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(TrainingCollector(stats, worker, trainer))
        self.batch_seconds = Histogram(
            "corteza_batch_seconds",
            "Training time of a batch.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "corteza_http_requests",
            "HTTP requests answered.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "corteza_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route", "method"],
            registry=self.registry,
        )
        self.checkpoint_failures = Counter(
            "corteza_checkpoint_failures",
            "Checkpoint saves that failed (training went on).",
            registry=self.registry,
        )

    def on_event(self, event: Event) -> None:
        if event.type == "batch_trained":
            self.batch_seconds.observe(event.data["seconds"])
        elif event.type == "checkpoint_failed":
            self.checkpoint_failures.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The template of the route that serves ``scope``, or ``unmatched``."""
    route = scope.get("route")
    if route is None:  # answered before routing (auth, limits): find it as the router would
        partial = None
        for candidate in getattr(scope.get("app"), "routes", ()):
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
            if match is Match.PARTIAL and partial is None:
                partial = candidate
        route = route or partial
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    return f"{path}/{{path}}" if isinstance(route, Mount) else path


def method_label(scope: Scope) -> str:
    """The request's method if it is a standard one, else ``OTHER``."""
    method = scope.get("method")
    return method if method in KNOWN_METHODS else OTHER_METHOD


class HttpMetricsMiddleware:
    """Counts HTTP requests by route template, method and status, and times them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = _metrics(scope)
        if scope["type"] != "http" or metrics is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before any answer ends as a 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = route_template(scope)
            method = method_label(scope)
            metrics.http_requests.labels(route, method, str(status)).inc()
            metrics.http_seconds.labels(route, method).observe(time.perf_counter() - started)


def _metrics(scope: Scope) -> ServerMetrics | None:
    state = getattr(getattr(scope.get("app"), "state", None), "corteza", None)
    metrics = getattr(state, "metrics", None)
    return metrics if isinstance(metrics, ServerMetrics) else None


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Counters, gauges and histograms in Prometheus' text format."""
    server_metrics: ServerMetrics = request.app.state.corteza.metrics
    return Response(server_metrics.render(), media_type=CONTENT_TYPE_LATEST)
