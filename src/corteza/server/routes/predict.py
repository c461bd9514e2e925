"""``POST /v1/predict``: the model's outputs per sample, without training."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from numpy.typing import NDArray
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from corteza.server.deps import StateDep
from corteza.server.errors import ApiError
from corteza.server.openapi import error_responses, request_body
from corteza.wire import (
    BatchError,
    PredictRequest,
    PredictResponse,
    inputs_from_rows,
    validate_inputs,
)

router = APIRouter(prefix="/v1", tags=["inference"])


def parse_predict_request(body: bytes, input_dim: int) -> NDArray[np.float32]:
    """JSON bytes -> validated inputs. Runs in the threadpool, never on the loop."""
    try:
        request = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError.from_validation_error(exc) from exc
    try:
        rows = inputs_from_rows(request.inputs, input_dim=input_dim)
        return validate_inputs(rows, input_dim=input_dim)
    except BatchError as exc:
        raise ApiError.from_batch_error(exc) from exc


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Predict without training",
    openapi_extra=request_body(PredictRequest),
    responses=error_responses(400, 422),
)
async def predict(request: Request, state: StateDep) -> PredictResponse:
    """Anomaly probability, dendrites and coherence per sample, in eval mode.

    Weights, optimizer state and statistics are left untouched.
    """
    inputs = await run_in_threadpool(
        parse_predict_request, await request.body(), state.trainer.config.input_dim
    )
    out = await state.worker.predict(inputs)
    return PredictResponse(
        anomaly_prob=out.probabilities.tolist(),
        dendrites=out.dendrites.tolist(),
        coherence=out.coherence.tolist(),
        count=int(out.probabilities.shape[0]),
    )
