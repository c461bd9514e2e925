"""Binary predictions: a safetensors file, ``Content-Type: application/x-corteza-predictions``.

``POST /v1/predict`` answers with it when the request's ``Accept`` asks for it::

    anomaly_probability  F32  [B]
    dendrites            F32  [B, 16]
    coherence            F32  [B, 64]
    __metadata__         protocol ("1.0")

The tensor names are those of the ONNX export's outputs. Decoding parses the
container strictly (:mod:`corteza.wire.safetensors_format`): any malformed
answer is a :class:`~corteza.wire.BatchError`, never another exception.

>>> import numpy as np
>>> body = encode_predictions(np.zeros(2), np.zeros((2, 16)), np.zeros((2, 64)))
>>> [a.shape for a in decode_predictions(body)]
[(2,), (2, 16), (2, 64)]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import safetensors.numpy
from numpy.typing import ArrayLike, NDArray

from corteza.wire.safetensors_format import (
    malformed,
    read_array,
    read_entries,
    read_header,
    read_metadata,
)
from corteza.wire.version import PROTOCOL_VERSION

PREDICTIONS_CONTENT_TYPE = "application/x-corteza-predictions"

ANOMALY_PROBABILITY = "anomaly_probability"
DENDRITES = "dendrites"
COHERENCE = "coherence"
OUTPUT_NAMES = (ANOMALY_PROBABILITY, DENDRITES, COHERENCE)


class PredictionArrays(NamedTuple):
    """The model's outputs per sample, as float32 arrays."""

    anomaly_probability: NDArray[np.float32]  # (B,)
    dendrites: NDArray[np.float32]  # (B, dendrite_dim)
    coherence: NDArray[np.float32]  # (B, coherence_dim)


def encode_predictions(
    anomaly_probability: ArrayLike, dendrites: ArrayLike, coherence: ArrayLike
) -> bytes:
    """The ``application/x-corteza-predictions`` body for one batch of outputs."""
    arrays = PredictionArrays(
        np.ascontiguousarray(anomaly_probability, dtype="<f4"),
        np.ascontiguousarray(dendrites, dtype="<f4"),
        np.ascontiguousarray(coherence, dtype="<f4"),
    )
    problem = _shape_problem(arrays)
    if problem is not None:
        raise ValueError(problem)
    data: bytes = safetensors.numpy.save(
        dict(zip(OUTPUT_NAMES, arrays, strict=True)), metadata={"protocol": PROTOCOL_VERSION}
    )
    return data


def decode_predictions(data: bytes) -> PredictionArrays:
    """Parse an ``application/x-corteza-predictions`` body.

    Raises :class:`~corteza.wire.BatchError` (of type ``malformed_body``), and
    nothing else, for any body that is not a set of predictions.
    """
    if len(data) == 0:
        raise malformed(f"the body is empty; expected {PREDICTIONS_CONTENT_TYPE}")
    header, body_start = read_header(data)
    read_metadata(header)
    entries = read_entries(header, len(data) - body_start)
    if sorted(entries) != sorted(OUTPUT_NAMES):
        raise malformed(
            f"predictions must hold exactly {', '.join(OUTPUT_NAMES)}; got "
            f"{', '.join(sorted(entries)) or 'no tensors'}"
        )
    for name, entry in entries.items():
        if entry.dtype != "F32":
            raise malformed(f"{name} must be F32, got {entry.dtype}")
    arrays = PredictionArrays(*(read_array(data, body_start, entries[n]) for n in OUTPUT_NAMES))
    problem = _shape_problem(arrays)
    if problem is not None:
        raise malformed(problem)
    return arrays


def _shape_problem(arrays: PredictionArrays) -> str | None:
    """What is wrong with the shapes, when they are not [B], [B, N], [B, M]."""
    probability, dendrites, coherence = arrays
    size = probability.shape[0] if probability.ndim == 1 else -1
    if size >= 0 and all(a.ndim == 2 and a.shape[0] == size for a in (dendrites, coherence)):
        return None
    return (
        "predictions must be shaped [B], [B, N], [B, M]; got "
        f"{list(probability.shape)}, {list(dendrites.shape)}, {list(coherence.shape)}"
    )
