"""The seed's training routes: ``POST /train_layer2`` and ``POST /feedback_dendritas``."""

from __future__ import annotations

import math
from dataclasses import replace

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from corteza.model import ModelConfig
from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.json_batches import read_train_request
from corteza.server.edge.limits import check_batch_limits
from corteza.server.edge.openapi import binary_body, error_responses, request_body
from corteza.server.engine.answers import now_iso
from corteza.server.engine.feedback import InvalidFeedbackError, UnknownBatchError
from corteza.server.engine.memory import DeviceOutOfMemoryError
from corteza.server.engine.runs import (
    OutOfOrderError,
    RunBusyError,
    RunConflictError,
    check_client_run_id,
    check_fingerprint,
)
from corteza.server.engine.trainer import TrainingDivergedError
from corteza.server.settings import Settings
from corteza.wire import (
    Batch,
    BatchError,
    ErrorType,
    FeedbackRequest,
    FeedbackResponse,
    TrainRequest,
    TrainResponse,
    batch_from_rows,
    targets_from_rows,
)
from corteza.wire.binary import BATCH_CONTENT_TYPE, decode_batch

router = APIRouter(tags=["training"])


Incoming = tuple[Batch, str | None, int | None]  # the batch, its run_id and seq


JSON_CONTENT_TYPE = "application/json"
FINGERPRINT_HEADER = "X-Corteza-Run-Fingerprint"

BINARY_BATCH_DESCRIPTION = (
    f"A safetensors file ({BATCH_CONTENT_TYPE}): tensors `inputs` F32, F16 or BF16 "
    "`[B, D]` or `[B, T, D]`, `anomaly_label` F32 or U8 `[B]`, optional `dendrite_target` "
    'F32 `[B, 16]` and `coherence_target` F32 `[B, 64]`; metadata `protocol` ("1.0"), '
    "`epochs`, optional `batch_id`, `run_id`, `seq`. See `corteza.wire.binary.encode_batch`."
)


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; missing -> JSON."""
    if not content_type:
        return JSON_CONTENT_TYPE
    return content_type.split(";", 1)[0].strip().lower() or JSON_CONTENT_TYPE


def batch_media_type(request: Request) -> str:
    """The request's media type: JSON or a binary batch, else 415."""
    content_type = media_type(request.headers.get("content-type"))
    if content_type not in (JSON_CONTENT_TYPE, BATCH_CONTENT_TYPE):
        raise ApiError(
            415,
            f"Unsupported Content-Type {content_type[:60]}; "
            f"send {JSON_CONTENT_TYPE} or {BATCH_CONTENT_TYPE}",
            ErrorType.UNSUPPORTED_MEDIA_TYPE,
        )
    return content_type


def parse_train_request(
    body: bytes, config: ModelConfig, settings: Settings | None = None
) -> Incoming:
    """JSON bytes -> validated batch, its samples counted first against ``settings``'
    limits. Runs in the threadpool, never on the loop."""
    request = read_train_request(body, settings)
    try:
        batch = batch_from_rows(
            [s.input_data for s in request.samples],
            [s.anomaly_label for s in request.samples],
            input_dim=config.input_dim,
            epochs=request.epochs,
        )
        batch = replace(
            batch,
            dendrite_target=targets_from_rows(
                [s.dendrite_target for s in request.samples],
                name="dendrite_target",
                width=config.dendrite_dim,
            ),
            coherence_target=targets_from_rows(
                [s.coherence_target for s in request.samples],
                name="coherence_target",
                width=config.coherence_dim,
            ),
        )
    except BatchError as exc:
        raise ApiError.from_batch_error(exc) from exc
    return batch, request.run_id, request.seq


def parse_binary_request(body: bytes, config: ModelConfig) -> Incoming:
    """``application/x-corteza-batch`` bytes -> validated batch. Runs in the threadpool."""
    try:
        decoded = decode_batch(
            body,
            input_dim=config.input_dim,
            dendrite_dim=config.dendrite_dim,
            coherence_dim=config.coherence_dim,
        )
    except BatchError as exc:
        raise ApiError.from_batch_error(exc) from exc
    return decoded.batch, decoded.run_id, decoded.seq


def parse_train_body(
    body: bytes, content_type: str, config: ModelConfig, settings: Settings | None = None
) -> Incoming:
    if content_type == BATCH_CONTENT_TYPE:
        incoming = parse_binary_request(body, config)
    else:
        incoming = parse_train_request(body, config, settings)
    _, run_id, seq = incoming
    if (run_id is None) != (seq is None):
        raise ApiError(
            422, "run_id and seq go together: send both or neither", ErrorType.INVALID_REQUEST
        )
    if run_id is not None:
        try:
            check_client_run_id(run_id)
        except ValueError as exc:
            raise ApiError(422, str(exc), ErrorType.INVALID_REQUEST) from exc
    return incoming


@router.post(
    "/train_layer2",
    response_model=TrainResponse,
    summary="Train on one batch",
    openapi_extra=request_body(
        TrainRequest, also=binary_body(BATCH_CONTENT_TYPE, BINARY_BATCH_DESCRIPTION)
    ),
    responses=error_responses(400, 409, 413, 415, 422, 500),
)
async def train_layer2(request: Request, state: StateDep) -> TrainResponse | JSONResponse:
    """Take ``epochs`` optimizer steps on the batch; every sample is checked first.

    The body is the seed's JSON, or a binary batch (``application/x-corteza-batch``).
    With ``run_id`` and ``seq`` the batch is applied exactly once: a seq already
    applied answers its stored result with ``"replayed": true``; a seq ahead of
    the run's next is refused with 409 and ``next_seq``. A run's fingerprint (of its
    data and settings) may come in the ``X-Corteza-Run-Fingerprint`` header: another one,
    or none on a run that has one, is 409 ``run_conflict``; a run a live stream holds
    is 409 ``run_busy``.
    """
    fingerprint = request.headers.get(FINGERPRINT_HEADER)
    if fingerprint is not None:
        try:
            check_fingerprint(fingerprint)
        except ValueError as exc:
            raise ApiError(422, str(exc), ErrorType.INVALID_REQUEST) from exc
    content_type = batch_media_type(request)
    body = await request.body()
    batch, run_id, seq = await run_in_threadpool(
        parse_train_body, body, content_type, state.trainer.config, state.settings
    )
    check_batch_limits(batch.inputs.shape, state.settings)
    try:
        answer = await state.worker.train(batch, run_id, seq, fingerprint)
    except RunConflictError as exc:
        raise ApiError(409, str(exc), ErrorType.RUN_CONFLICT) from exc
    except RunBusyError as exc:
        raise ApiError(409, str(exc), ErrorType.RUN_BUSY) from exc
    except TrainingDivergedError as exc:
        raise ApiError(422, str(exc), ErrorType.TRAINING_DIVERGED) from exc
    except DeviceOutOfMemoryError as exc:
        raise ApiError(413, str(exc), ErrorType.OUT_OF_MEMORY, fits_batch_size=exc.fits) from exc
    except OutOfOrderError as exc:
        raise ApiError(409, str(exc), ErrorType.OUT_OF_ORDER, next_seq=exc.next_seq) from exc
    if answer.get("replayed"):
        return JSONResponse(answer)  # may be only {seq, run_id} when too old to be stored
    return TrainResponse.model_validate(answer)


@router.post(
    "/feedback_dendritas",
    response_model=FeedbackResponse,
    summary="Send dendritic feedback",
    responses=error_responses(400, 404, 422),
)
async def feedback_dendritas(feedback: FeedbackRequest, state: StateDep) -> FeedbackResponse:
    """Record feedback; validated feedback also teaches the dendrite head.

    ``ajustes_aplicados`` becomes the regression target of the dendrite head
    on the inputs of batch ``batch_id`` (the latest when absent, as the
    seed's client sends none), weighted by ``reward``; nothing else moves.
    """
    expected = state.trainer.config.dendrite_dim
    if len(feedback.ajustes_aplicados) != expected:
        raise ApiError(
            422,
            f"ajustes_aplicados must have {expected} values, got {len(feedback.ajustes_aplicados)}",
            ErrorType.INVALID_REQUEST,
        )
    if not all(math.isfinite(v) for v in feedback.ajustes_aplicados):
        raise ApiError(422, "ajustes_aplicados contains NaN or Inf", ErrorType.NON_FINITE_INPUT)
    try:
        batch_id, outcome = await state.worker.give_feedback(
            feedback.batch_id, feedback.ajustes_aplicados, feedback.validacion, feedback.reward
        )
    except UnknownBatchError as exc:
        raise ApiError(404, str(exc), ErrorType.UNKNOWN_BATCH) from exc
    except InvalidFeedbackError as exc:
        raise ApiError(422, str(exc), ErrorType.INVALID_FEEDBACK) from exc
    return FeedbackResponse.model_validate(
        {
            "validacion": feedback.validacion,
            "timestamp": now_iso(),
            "estadisticas": state.statistics(),
            "batch_id": batch_id,
            "applied": outcome is not None and not outcome.skipped,
            "skipped": outcome is not None and outcome.skipped,
            "dendrite_loss": None if outcome is None else outcome.loss,
        }
    )
