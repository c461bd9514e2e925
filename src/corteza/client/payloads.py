"""Request bodies and the pre-flight checks the client runs before sending.

The checks are the server's own (``corteza.wire``), so a refused batch gets
the same words on both sides of the wire, with the offending row named.
"""

from __future__ import annotations

import json

import numpy as np
from numpy.typing import ArrayLike, NDArray

from corteza.client.errors import InvalidDataError
from corteza.wire import BatchError, validate_batch, validate_inputs


def preflight_batch(
    inputs: ArrayLike, labels: ArrayLike, input_dim: int, epochs: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The server's own checks, run before anything is sent."""
    try:
        batch = validate_batch(
            np.asarray(inputs, dtype=np.float64),
            np.asarray(labels, dtype=np.float64),
            input_dim=input_dim,
            epochs=epochs,
        )
    except (BatchError, ValueError) as exc:
        raise refusal(exc) from exc
    return batch.inputs, batch.labels


def preflight_inputs(inputs: ArrayLike, input_dim: int) -> NDArray[np.float32]:
    try:
        return validate_inputs(np.asarray(inputs, dtype=np.float64), input_dim=input_dim)
    except (BatchError, ValueError) as exc:
        raise refusal(exc) from exc


def refusal(exc: Exception) -> InvalidDataError:
    """The server's own check refused a batch: its words, error_type and sample."""
    if isinstance(exc, BatchError):
        return InvalidDataError(exc.message, error_type=exc.error_type.value, sample=exc.sample)
    return InvalidDataError(f"Malformed input_data: {exc}", error_type="invalid_request")


def encode_json_batch(
    inputs: ArrayLike,
    labels: ArrayLike,
    *,
    epochs: int = 1,
    dendrite_target: ArrayLike | None = None,
    coherence_target: ArrayLike | None = None,
) -> bytes:
    """The seed's ``/train_layer2`` JSON body for a batch (targets per sample, if any)."""
    rows = np.asarray(inputs, dtype=np.float32).tolist()
    label_list = [int(v) if float(v).is_integer() else float(v) for v in np.asarray(labels).ravel()]
    if len(rows) != len(label_list):
        raise ValueError(f"got {len(rows)} samples but {len(label_list)} labels")
    samples: list[dict[str, object]] = [
        {"input_data": row, "anomaly_label": label}
        for row, label in zip(rows, label_list, strict=True)
    ]
    for name, target in (
        ("dendrite_target", dendrite_target),
        ("coherence_target", coherence_target),
    ):
        if target is not None:
            for sample, values in zip(
                samples, np.asarray(target, np.float32).tolist(), strict=True
            ):
                sample[name] = values
    # NaN/Inf go out as JSON's non-standard literals so the server names the sample.
    return json.dumps({"samples": samples, "epochs": epochs}).encode()
