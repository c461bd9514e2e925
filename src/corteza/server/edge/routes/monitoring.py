"""Read-only routes that never wait for the worker: ``/health``, ``/status``, ``/metricas``."""

from __future__ import annotations

import time
from typing import Any

import torch
from fastapi import APIRouter

from corteza._version import __version__
from corteza.server.edge.deps import StateDep
from corteza.server.engine.answers import now_iso
from corteza.server.state import MODEL_NAME, ServerState
from corteza.wire import PROTOCOL_VERSION, HealthResponse, MetricsResponse, StatusResponse

router = APIRouter(tags=["monitoring"])


@router.get("/health", response_model=HealthResponse, summary="Liveness")
async def health(state: StateDep) -> HealthResponse:
    return HealthResponse(
        alive=True, timestamp=now_iso(), uptime_seconds=time.monotonic() - state.started
    )


@router.get("/status", response_model=StatusResponse, summary="State and statistics")
async def status(state: StateDep) -> StatusResponse:
    return StatusResponse.model_validate(
        {
            "modelo": MODEL_NAME,
            "estadisticas": state.statistics(),
            "torch_version": torch.__version__,
            "cuda_available": state.cuda_available,
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "queue_depth": state.worker.queue_depth,
            "checkpoints": state.checkpointer.health(),
            "runs": len(state.runs),
            **distributed_field(state),
            **({} if (job := state.jobs.summary()) is None else {"job": job}),
        }
    )


def distributed_field(state: ServerState) -> dict[str, Any]:
    """``{"distributed": {"world_size", "backend", "nodes"}}`` under torch.distributed; ``{}``
    in one process."""
    group = state.trainer.group
    return {} if group is None else {"distributed": group.describe()}


@router.get("/metricas", response_model=MetricsResponse, summary="Recent losses and trend")
async def metricas(state: StateDep) -> MetricsResponse:
    return MetricsResponse.model_validate(state.stats.metrics(state.settings.trend_window))
