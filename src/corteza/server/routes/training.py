"""The seed's training routes: ``POST /train_layer2`` and ``POST /feedback_dendritas``."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from corteza.server.deps import StateDep
from corteza.server.errors import ApiError
from corteza.server.openapi import error_responses, request_body
from corteza.server.trainer import TrainingDivergedError, TrainResult
from corteza.wire import (
    Batch,
    BatchError,
    ErrorType,
    FeedbackRequest,
    FeedbackResponse,
    TrainRequest,
    TrainResponse,
    batch_from_rows,
)

router = APIRouter(tags=["training"])


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def parse_train_request(body: bytes, input_dim: int) -> Batch:
    """JSON bytes -> validated batch. Runs in the threadpool, never on the loop."""
    try:
        request = TrainRequest.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError.from_validation_error(exc) from exc
    try:
        return batch_from_rows(
            [s.input_data for s in request.samples],
            [s.anomaly_label for s in request.samples],
            input_dim=input_dim,
            epochs=request.epochs,
        )
    except BatchError as exc:
        raise ApiError.from_batch_error(exc) from exc


def train_response(result: TrainResult) -> TrainResponse:
    capa2, capa3, capa4 = result.capa_means
    return TrainResponse.model_validate(
        {
            "loss": result.loss,
            "batch_size": result.batch_size,
            "outputs": {
                "anomaly_prob": float(result.probabilities.mean()),
                "dendrite_adjustments": result.dendrites,
                "coherence_state": result.coherence,
            },
            "capa_info": {
                "capa2_activations": capa2,
                "capa3_activations": capa3,
                "capa4_activations": capa4,
            },
            "timestamp": now_iso(),
            "step": result.step,
            "epochs": result.epochs,
            "losses": result.losses,
            "duration_seconds": result.seconds,
        }
    )


@router.post(
    "/train_layer2",
    response_model=TrainResponse,
    summary="Train on one batch",
    openapi_extra=request_body(TrainRequest),
    responses=error_responses(400, 422, 500),
)
async def train_layer2(request: Request, state: StateDep) -> TrainResponse:
    """Take ``epochs`` optimizer steps on the batch; every sample is checked first."""
    body = await request.body()
    batch = await run_in_threadpool(parse_train_request, body, state.trainer.config.input_dim)
    try:
        result = await state.worker.train(batch)
    except TrainingDivergedError as exc:
        raise ApiError(422, str(exc), ErrorType.TRAINING_DIVERGED) from exc
    return train_response(result)


@router.post(
    "/feedback_dendritas",
    response_model=FeedbackResponse,
    summary="Send dendritic feedback",
    responses=error_responses(422),
)
async def feedback_dendritas(feedback: FeedbackRequest, state: StateDep) -> FeedbackResponse:
    """Record feedback on the dendrite adjustments and count it."""
    expected = state.trainer.config.dendrite_dim
    if len(feedback.ajustes_aplicados) != expected:
        raise ApiError(
            422,
            f"ajustes_aplicados must have {expected} values, got {len(feedback.ajustes_aplicados)}",
            ErrorType.INVALID_REQUEST,
        )
    if not all(math.isfinite(v) for v in feedback.ajustes_aplicados):
        raise ApiError(422, "ajustes_aplicados contains NaN or Inf", ErrorType.NON_FINITE_INPUT)
    state.stats.record_feedback(feedback.validacion)
    return FeedbackResponse.model_validate(
        {
            "validacion": feedback.validacion,
            "timestamp": now_iso(),
            "estadisticas": state.statistics(),
        }
    )
