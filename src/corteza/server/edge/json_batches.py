"""JSON batch bodies (``/train_layer2``, ``/v1/predict``), their rows counted before validation.

pydantic validated ``inputs: list[list[float]] | list[list[list[float]]]`` in
smart mode: strict first, so every integer of a body (``0`` rather than
``0.0``) made an error object before the lax pass, and a 20 MB body peaked
at 3.6 GB before its 413 "Batch too large". Here the body is first read by
the standard library's C parser (cheap: small integers are shared objects),
the rows (and the time steps of sequences) are counted and refused
over the limits before any batch is built; then pydantic validates the body
against the one shape it has, rows or sequences: no union, no error storm,
and its words (``Request body is not valid JSON: ...``, ``Input should be a
valid array``) stay those the clients know.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from corteza.server.edge.errors import ApiError
from corteza.server.edge.limits import check_batch_limits
from corteza.server.settings import Settings
from corteza.wire import PredictRequest, Sample, TrainRequest

M = TypeVar("M", bound=BaseModel)


class _RowSample(Sample):
    input_data: list[float]


class _SequenceSample(Sample):
    input_data: list[list[float]]


class _RowTrain(TrainRequest):
    samples: list[_RowSample]  # type: ignore[assignment]


class _SequenceTrain(TrainRequest):
    samples: list[_SequenceSample]  # type: ignore[assignment]


class _RowPredict(PredictRequest):
    inputs: list[list[float]]


class _SequencePredict(PredictRequest):
    inputs: list[list[list[float]]]


def _document(body: bytes) -> Any:
    """The parsed body, or ``None`` when the standard library cannot read it."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _count(rows: Any, settings: Settings | None) -> bool:
    """Refuse ``rows`` over the batch limits (413); whether they are sequences."""
    if not isinstance(rows, list) or not rows:
        return False
    sequences = [r for r in rows if isinstance(r, list) and r and isinstance(r[0], list)]
    if settings is None:
        pass
    elif sequences:
        check_batch_limits((len(rows), max(len(s) for s in sequences), 0), settings)
    else:
        check_batch_limits((len(rows),), settings)
    return bool(sequences)


def _validate_json(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError.from_validation_error(exc) from exc


def read_train_request(body: bytes, settings: Settings | None) -> TrainRequest:
    """The ``/train_layer2`` JSON body, its samples counted (unless ``settings`` is None)
    before they are built."""
    document = _document(body)
    if not isinstance(document, dict):
        return _validate_json(_RowTrain, body)
    samples = document.get("samples")
    inputs = (
        [s.get("input_data") if isinstance(s, dict) else None for s in samples]
        if isinstance(samples, list)
        else None
    )
    del samples
    sequences = _count(inputs, settings)
    del document, inputs  # counted: pydantic reads the body again, in its own words
    return _validate_json(_SequenceTrain if sequences else _RowTrain, body)


def read_predict_request(body: bytes, settings: Settings | None) -> PredictRequest:
    """The ``/v1/predict`` JSON body, its rows counted (unless ``settings`` is None)
    before they are built."""
    document = _document(body)
    if not isinstance(document, dict):
        return _validate_json(_RowPredict, body)
    sequences = _count(document.get("inputs"), settings)
    del document
    return _validate_json(_SequencePredict if sequences else _RowPredict, body)
