"""Batch validation shared by the server and the client's pre-flight check.

Every sample is checked, not only the first, and the first offending sample
is named. Nothing here needs torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from corteza.wire.errors import BatchError, ErrorType

MAX_EPOCHS_PER_BATCH = 1000


@dataclass(frozen=True)
class Batch:
    """A validated batch, ready for the model."""

    inputs: NDArray[np.float32]  # (B, D) or (B, T, D)
    labels: NDArray[np.float32]  # (B,) of 0.0 / 1.0
    epochs: int = 1
    # Regression targets of the dendrite / coherence heads; a NaN row means "no target".
    dendrite_target: NDArray[np.float32] | None = None  # (B, 16)
    coherence_target: NDArray[np.float32] | None = None  # (B, 64)

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])


def dimension_mismatch(expected: int, got: int, sample: int | None = None) -> BatchError:
    """The seed's own words for a wrong input width."""
    return BatchError(
        f"Input dimension mismatch: expected {expected}D, got {got}D",
        ErrorType.DIMENSION_MISMATCH,
        sample,
    )


def inputs_from_rows(
    rows: Sequence[Sequence[float] | Sequence[Sequence[float]]], *, input_dim: int
) -> NDArray[np.float32]:
    """Stack JSON-like rows into ``(B, D)`` or ``(B, T, D)``, checking every sample.

    A row is ``D`` floats, or ``T`` lists of ``D`` floats (a sequence).
    """
    if len(rows) == 0:
        raise BatchError("Empty batch: send at least one sample", ErrorType.EMPTY_BATCH)
    first_steps: int | None = None
    for i, row in enumerate(rows):
        is_sequence = len(row) > 0 and isinstance(row[0], (list, tuple))
        steps = len(row) if is_sequence else 0
        if first_steps is None:
            first_steps = steps
        elif steps != first_steps:
            raise BatchError(
                f"Ragged batch: sample {i} has {_steps_words(steps)}, "
                f"sample 0 has {_steps_words(first_steps)}",
                ErrorType.RAGGED_BATCH,
                i,
            )
        widths = [len(step) for step in row] if is_sequence else [len(row)]  # type: ignore[arg-type]
        for width in widths:
            if width != input_dim:
                raise dimension_mismatch(input_dim, width, i)
    try:
        with np.errstate(over="ignore"):  # values beyond float32 become inf, caught later
            return np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError) as exc:  # a step of the wrong type slipped through
        raise BatchError(f"Malformed input_data: {exc}", ErrorType.INVALID_REQUEST) from exc


def batch_from_rows(
    rows: Sequence[Sequence[float] | Sequence[Sequence[float]]],
    labels: Sequence[float],
    *,
    input_dim: int,
    epochs: int = 1,
) -> Batch:
    """Build a :class:`Batch` from JSON-like rows, checking every sample."""
    inputs = inputs_from_rows(rows, input_dim=input_dim)
    return validate_batch(
        inputs, np.asarray(labels, dtype=np.float64), input_dim=input_dim, epochs=epochs
    )


def validate_inputs(
    inputs: NDArray[np.floating], *, input_dim: int, first: int = 0
) -> NDArray[np.float32]:
    """Check an input array (shape, width, finiteness) and return it as float32.

    ``first`` numbers the samples in the words: the index of ``inputs[0]`` in
    its file, when a file is checked a chunk at a time.
    """
    if inputs.size == 0 and inputs.shape[:1] in ((0,), ()):
        raise BatchError("Empty batch: send at least one sample", ErrorType.EMPTY_BATCH)
    if inputs.ndim not in (2, 3):
        raise BatchError(
            f"inputs must be (B, {input_dim}) or (B, T, {input_dim}), got shape "
            f"{list(inputs.shape)}",
            ErrorType.DIMENSION_MISMATCH,
        )
    if inputs.shape[0] == 0:
        raise BatchError("Empty batch: send at least one sample", ErrorType.EMPTY_BATCH)
    if inputs.shape[-1] != input_dim:
        raise dimension_mismatch(input_dim, int(inputs.shape[-1]), first)
    if inputs.ndim == 3 and inputs.shape[1] == 0:
        raise BatchError(
            "Empty sequence: samples must have at least one time step", ErrorType.EMPTY_BATCH, first
        )
    with np.errstate(over="ignore"):  # values beyond float32 become inf, caught below
        as_f32 = np.ascontiguousarray(inputs, dtype=np.float32)
    finite = np.isfinite(as_f32.reshape(as_f32.shape[0], -1)).all(axis=1)
    if not finite.all():
        i = first + int(np.argmin(finite))
        raise BatchError(
            f"Non-finite input: sample {i} contains NaN or Inf", ErrorType.NON_FINITE_INPUT, i
        )
    return as_f32


def validate_batch(
    inputs: NDArray[np.floating],
    labels: NDArray[np.floating] | NDArray[np.integer],
    *,
    input_dim: int,
    epochs: int = 1,
    first: int = 0,
) -> Batch:
    """Check an array batch and return it as float32.

    Raises :class:`BatchError` naming the first offending sample (counted from
    ``first``, as in :func:`validate_inputs`).
    """
    as_f32 = validate_inputs(inputs, input_dim=input_dim, first=first)
    validate_labels(labels, as_f32.shape[0], first=first)
    if not 1 <= epochs <= MAX_EPOCHS_PER_BATCH:
        raise BatchError(
            f"epochs must be between 1 and {MAX_EPOCHS_PER_BATCH}, got {epochs}",
            ErrorType.INVALID_REQUEST,
        )
    return Batch(as_f32, labels.astype(np.float32), epochs)


def validate_labels(
    labels: NDArray[np.floating] | NDArray[np.integer], batch_size: int, *, first: int = 0
) -> None:
    """Check ``batch_size`` labels, each 0 or 1 (samples counted from ``first``)."""
    if labels.shape != (batch_size,):
        raise BatchError(
            f"Expected {batch_size} anomaly labels, got {labels.size}",
            ErrorType.INVALID_LABEL,
        )
    valid = (labels == 0) | (labels == 1)
    if not valid.all():
        i = int(np.argmin(valid))
        raise BatchError(
            f"Invalid anomaly_label: sample {first + i} has {_number(labels[i])}, expected 0 or 1",
            ErrorType.INVALID_LABEL,
            first + i,
        )


def _number(value: float | int | np.generic) -> str:
    as_float = float(value)
    return str(int(as_float)) if as_float.is_integer() else repr(as_float)


def _steps_words(steps: int) -> str:
    if steps == 0:
        return "a flat row"
    return "1 time step" if steps == 1 else f"{steps} time steps"


def targets_from_rows(
    rows: Sequence[Sequence[float] | None], *, name: str, width: int
) -> NDArray[np.float32] | None:
    """Per-sample optional targets -> ``(B, width)`` with NaN rows where absent."""
    if all(row is None for row in rows):
        return None
    out = np.full((len(rows), width), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if row is None:
            continue
        if len(row) != width:
            raise BatchError(
                f"{name} must have {width} values, got {len(row)} (sample {i})",
                ErrorType.INVALID_REQUEST,
                i,
            )
        with np.errstate(over="ignore"):
            out[i] = np.asarray(row, dtype=np.float32)
        if not np.isfinite(out[i]).all():
            raise BatchError(
                f"Non-finite {name}: sample {i} contains NaN or Inf", ErrorType.NON_FINITE_INPUT, i
            )
    return out
