"""``POST /v1/predict``: the model's outputs per sample, without training.

The request is JSON or a binary batch (``application/x-corteza-batch``, whose
labels are optional and ignored). The answer is JSON unless ``Accept`` prefers
``application/x-corteza-predictions`` (safetensors); an ``Accept`` that allows
neither gets 406.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool

from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.json_batches import read_predict_request
from corteza.server.edge.limits import check_batch_limits
from corteza.server.edge.openapi import binary_body, error_responses, request_body
from corteza.server.edge.routes.training import JSON_CONTENT_TYPE, batch_media_type
from corteza.server.engine.trainer import Predictions
from corteza.server.settings import Settings
from corteza.wire import (
    BATCH_CONTENT_TYPE,
    PREDICTIONS_CONTENT_TYPE,
    BatchError,
    ErrorType,
    PredictRequest,
    PredictResponse,
    decode_inputs,
    encode_predictions,
    inputs_from_rows,
    validate_inputs,
)

router = APIRouter(prefix="/v1", tags=["inference"])

ANSWERS = (JSON_CONTENT_TYPE, PREDICTIONS_CONTENT_TYPE)  # the first is the default

BINARY_INPUTS_DESCRIPTION = (
    f"A safetensors file ({BATCH_CONTENT_TYPE}): tensor `inputs` F32, F16 or BF16 `[B, D]` "
    '`[B, T, D]`; metadata `protocol` ("1.0"). Labels and targets may be present and '
    "are ignored. See `corteza.wire.binary.encode_batch`."
)
BINARY_PREDICTIONS_DESCRIPTION = (
    f"With `Accept: {PREDICTIONS_CONTENT_TYPE}`: a safetensors file with F32 tensors "
    "`anomaly_probability` `[B]`, `dendrites` `[B, 16]`, `coherence` `[B, 64]`. "
    "See `corteza.wire.predictions.decode_predictions`."
)


def parse_predict_request(
    body: bytes, input_dim: int, settings: Settings | None = None
) -> NDArray[np.float32]:
    """JSON bytes -> validated inputs, the rows counted first against ``settings``' limits.
    Runs in the threadpool, never on the loop."""
    request = read_predict_request(body, settings)
    try:
        rows = inputs_from_rows(request.inputs, input_dim=input_dim)
        return validate_inputs(rows, input_dim=input_dim)
    except BatchError as exc:
        raise ApiError.from_batch_error(exc) from exc


def parse_binary_inputs(body: bytes, input_dim: int) -> NDArray[np.float32]:
    """``application/x-corteza-batch`` bytes -> validated inputs. Runs in the threadpool."""
    try:
        return decode_inputs(body, input_dim=input_dim)
    except BatchError as exc:
        raise ApiError.from_batch_error(exc) from exc


def negotiate(accept: str | None) -> str:
    """The answer's content type for an ``Accept`` header (RFC 9110 §12.5.1).

    Each answer takes the quality of the most specific range that matches it;
    then the highest quality wins, then the more specific range, then the
    earlier one. A missing header, ``*/*`` and ``application/*`` get JSON.
    Raises 406 when neither answer is acceptable.
    """
    if accept is None or not accept.strip():
        return JSON_CONTENT_TYPE
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        ranges.append((media.lower(), _quality(params)))
    best: tuple[float, int, int, int] | None = None
    chosen = None
    for index, answer in enumerate(ANSWERS):
        matches = [
            (specificity, quality, -position)
            for position, (media, quality) in enumerate(ranges)
            if (specificity := _specificity(media, answer)) >= 0
        ]
        if not matches:
            continue
        specificity, quality, order = max(matches)
        rank = (quality, specificity, order, -index)
        if quality > 0 and (best is None or rank > best):
            best, chosen = rank, answer
    if chosen is None:
        raise ApiError(
            406,
            f"Cannot answer with {accept[:80]}; /v1/predict answers {JSON_CONTENT_TYPE} "
            f"or {PREDICTIONS_CONTENT_TYPE}",
            ErrorType.NOT_ACCEPTABLE,
        )
    return chosen


def _quality(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return min(max(float(value.strip()), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def _specificity(media: str, answer: str) -> int:
    """2 for an exact match, 1 for ``type/*``, 0 for ``*/*``, -1 when ``media`` excludes it."""
    if media == answer:
        return 2
    if media == "*/*":
        return 0
    if media.endswith("/*") and answer.startswith(media[:-1]):
        return 1
    return -1


def _json_answer(out: Predictions) -> PredictResponse:
    return PredictResponse(
        anomaly_prob=out.probabilities.tolist(),
        dendrites=out.dendrites.tolist(),
        coherence=out.coherence.tolist(),
        count=int(out.probabilities.shape[0]),
    )


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Predict without training",
    openapi_extra=request_body(
        PredictRequest, also=binary_body(BATCH_CONTENT_TYPE, BINARY_INPUTS_DESCRIPTION)
    ),
    responses={
        200: {
            "content": {
                PREDICTIONS_CONTENT_TYPE: {
                    "schema": {"type": "string", "format": "binary"},
                    "description": BINARY_PREDICTIONS_DESCRIPTION,
                }
            }
        },
        **error_responses(400, 406, 413, 415, 422),
    },
)
async def predict(
    request: Request, response: Response, state: StateDep
) -> PredictResponse | Response:
    """Anomaly probability, dendrites and coherence per sample, in eval mode.

    Weights, optimizer state and statistics are left untouched.
    """
    answer = negotiate(request.headers.get("accept"))
    content_type = batch_media_type(request)
    body, input_dim = await request.body(), state.trainer.config.input_dim
    if content_type == BATCH_CONTENT_TYPE:
        inputs = await run_in_threadpool(parse_binary_inputs, body, input_dim)
    else:
        inputs = await run_in_threadpool(parse_predict_request, body, input_dim, state.settings)
    check_batch_limits(inputs.shape, state.settings)
    out = await state.worker.predict(inputs)
    if answer == JSON_CONTENT_TYPE:
        response.headers["Vary"] = "Accept"
        return _json_answer(out)
    body = await run_in_threadpool(
        encode_predictions, out.probabilities, out.dendrites, out.coherence
    )
    return Response(body, media_type=PREDICTIONS_CONTENT_TYPE, headers={"Vary": "Accept"})
