"""Binary training batches: a safetensors file, ``Content-Type: application/x-corteza-batch``.

Layout (the safetensors format: 8-byte little-endian header length ``N``,
``N`` bytes of JSON header, then the tensor bytes)::

    inputs            F32 | F16 | BF16   [B, D] or [B, T, D]
    anomaly_label     F32 (written) | U8 (also read)   [B]
    dendrite_target   F32   [B, 16]   optional
    coherence_target  F32   [B, 64]   optional
    __metadata__      protocol ("1.0"), epochs, and optionally batch_id, run_id, seq

Labels are written as F32 so that any label the caller gives reaches the
server as it is, and is judged there in the same words as the JSON route
("Invalid anomaly_label: sample 1 has 0.5, expected 0 or 1"); that costs
4 bytes a sample against the 6,400 of a 1600-D f32 row. U8 labels, the
compact choice of other writers, are read too.

Encoding uses ``safetensors.numpy.save`` for F32 and F16. numpy has no
bfloat16, so BF16 rounds float32 to its upper 16 bits (round to nearest,
ties to even) and the file is written by
:func:`corteza.wire.safetensors_format.save`.

Decoding does not use the library: :mod:`corteza.wire.safetensors_format`
parses the container strictly, so that every malformed body becomes a
:class:`~corteza.wire.BatchError` with a clear message, never another
exception. The batch then goes through :func:`~corteza.wire.validate_batch`,
so both routes say the same words.

Container faults are :attr:`ErrorType.MALFORMED_BODY` (the server answers
400, like invalid JSON); a well-formed file whose content is wrong gets the
same codes as the JSON route (422). Unknown metadata keys are ignored;
unknown tensors are refused, since a misspelt optional target would
otherwise be dropped silently.

>>> import numpy as np
>>> body = encode_batch(np.zeros((2, 3)), [0, 1], epochs=2, dtype="f16")
>>> decoded = decode_batch(body, input_dim=3)
>>> decoded.batch.inputs.shape, decoded.batch.epochs, decoded.wire_dtype
((2, 3), 2, 'f16')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import safetensors.numpy
from numpy.typing import ArrayLike, NDArray

from corteza.wire.errors import BatchError, ErrorType
from corteza.wire.safetensors_format import (
    Entry,
    malformed,
    read_array,
    read_entries,
    read_header,
    read_metadata,
    save,
    shorten,
    show,
)
from corteza.wire.validation import Batch, validate_batch, validate_inputs
from corteza.wire.version import PROTOCOL_VERSION

BATCH_CONTENT_TYPE = "application/x-corteza-batch"

WireDtype = Literal["f32", "f16", "bf16"]

INPUTS = "inputs"
LABELS = "anomaly_label"
DENDRITE_TARGET = "dendrite_target"
COHERENCE_TARGET = "coherence_target"
_TENSORS = (INPUTS, LABELS, DENDRITE_TARGET, COHERENCE_TARGET)

_WIRE_DTYPES: dict[str, WireDtype] = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
_LABEL_DTYPES = ("F32", "U8")
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_VERSION = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})")
_MAJOR = PROTOCOL_VERSION.split(".")[0]
# The smallest magnitudes that round to infinity (halfway past the largest finite value).
_F16_OVERFLOW = 65520.0
_BF16_OVERFLOW = float(np.uint32(0x7F7F8000).view(np.float32))


@dataclass(frozen=True)
class DecodedBatch:
    """A decoded, validated binary batch: the :class:`Batch` and what came with it."""

    batch: Batch
    wire_dtype: WireDtype = "f32"  # how ``inputs`` travelled; ``batch.inputs`` is float32
    batch_id: str | None = None
    run_id: str | None = None
    seq: int | None = None
    dendrite_target: NDArray[np.float32] | None = None  # (B, 16)
    coherence_target: NDArray[np.float32] | None = None  # (B, 64)


# ---------------------------------------------------------------- encode


def encode_batch(
    inputs: ArrayLike,
    labels: ArrayLike,
    *,
    epochs: int = 1,
    batch_id: str | None = None,
    dtype: WireDtype = "f32",
    dendrite_target: ArrayLike | None = None,
    coherence_target: ArrayLike | None = None,
    run_id: str | None = None,
    seq: int | None = None,
) -> bytes:
    """The ``application/x-corteza-batch`` body for a batch.

    Only the shapes are checked here; the values (NaN, labels, epochs range)
    are judged by :func:`~corteza.wire.validate_batch`, on the server or in
    the client's pre-flight check. A value that becomes infinite only
    because ``dtype`` cannot hold it (beyond ±65,504 in f16) is refused here.
    """
    if dtype not in _WIRE_DTYPES.values():
        raise ValueError(f"dtype must be 'f32', 'f16' or 'bf16', got {dtype!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        raise TypeError(f"epochs must be an int, got {type(epochs).__name__}")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        raise ValueError(f"seq must be a non-negative int, got {seq!r}")
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(inputs, dtype=np.float32)
    y = np.asarray(labels, dtype=np.float32)
    if x.ndim not in (2, 3):
        raise BatchError(
            f"inputs must be (B, D) or (B, T, D), got shape {list(x.shape)}",
            ErrorType.DIMENSION_MISMATCH,
        )
    size = x.shape[0]
    if y.shape != (size,):
        raise BatchError(
            f"Expected {size} anomaly labels, got shape {list(y.shape)}", ErrorType.INVALID_LABEL
        )
    tensors: dict[str, NDArray[Any]] = {INPUTS: _to_wire(x, dtype), LABELS: y.astype("<f4")}
    for name, target in ((DENDRITE_TARGET, dendrite_target), (COHERENCE_TARGET, coherence_target)):
        if target is not None:
            t = np.asarray(target, dtype="<f4")
            if t.ndim != 2 or t.shape[0] != size:
                raise BatchError(
                    f"{name} must have shape [{size}, N], got {list(t.shape)}",
                    ErrorType.INVALID_REQUEST,
                )
            tensors[name] = t
    metadata = {"protocol": PROTOCOL_VERSION, "epochs": str(epochs)}
    for key, value in (("batch_id", batch_id), ("run_id", run_id), ("seq", seq)):
        if value is not None:
            metadata[key] = str(value)
    return _save(tensors, metadata, dtype)


def encode_inputs(inputs: ArrayLike, *, dtype: WireDtype = "f32") -> bytes:
    """The ``application/x-corteza-batch`` body of inputs alone, for ``POST /v1/predict``."""
    if dtype not in _WIRE_DTYPES.values():
        raise ValueError(f"dtype must be 'f32', 'f16' or 'bf16', got {dtype!r}")
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(inputs, dtype=np.float32)
    if x.ndim not in (2, 3):
        raise BatchError(
            f"inputs must be (B, D) or (B, T, D), got shape {list(x.shape)}",
            ErrorType.DIMENSION_MISMATCH,
        )
    return _save({INPUTS: _to_wire(x, dtype)}, {"protocol": PROTOCOL_VERSION}, dtype)


def _save(tensors: dict[str, NDArray[Any]], metadata: dict[str, str], dtype: WireDtype) -> bytes:
    if dtype == "bf16":  # numpy has no bfloat16: written by our own writer
        return save(tensors, metadata)
    data: bytes = safetensors.numpy.save(tensors, metadata=metadata)
    return data


def _to_wire(x: NDArray[np.float32], dtype: WireDtype) -> NDArray[Any]:
    x = np.ascontiguousarray(x, dtype="<f4")
    if dtype == "f32":
        return x
    if dtype == "f16":
        _refuse_overflow(x, _F16_OVERFLOW, "f16 range (±65504)")
        return x.astype("<f2")
    _refuse_overflow(x, _BF16_OVERFLOW, "bf16 range (±3.39e38)")
    bits = x.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    rounded[np.isnan(x)] = 0x7FC0  # rounding could carry a NaN's payload into Inf
    return rounded


def _refuse_overflow(x: NDArray[np.float32], limit: float, what: str) -> None:
    """Refuse finite values that would become infinite on the wire (NaN compares False)."""
    magnitude = np.abs(x)
    if (magnitude >= limit).any():
        lost = (magnitude >= limit) & np.isfinite(x)
        if lost.any():
            i = int(np.argmax(lost.reshape(x.shape[0], -1).any(axis=1)))
            raise BatchError(
                f"inputs: sample {i} has values beyond the {what}; send f32",
                ErrorType.NON_FINITE_INPUT,
                i,
            )


# ---------------------------------------------------------------- decode


def decode_batch(
    data: bytes,
    *,
    input_dim: int,
    max_batch: int | None = None,
    dendrite_dim: int = 16,
    coherence_dim: int = 64,
) -> DecodedBatch:
    """Parse and validate an ``application/x-corteza-batch`` body.

    Raises :class:`~corteza.wire.BatchError`, and nothing else, for any body
    that is not a valid batch for a model of width ``input_dim``.
    """
    metadata, entries, body_start = _open(data, max_batch, required=(INPUTS, LABELS))
    epochs = _integer(metadata, "epochs")
    seq = _integer(metadata, "seq")
    if seq is not None and seq < 0:
        raise BatchError(
            f"seq must be a non-negative integer, got {seq}", ErrorType.INVALID_REQUEST
        )
    _check_dtype(entries, LABELS, _LABEL_DTYPES)
    _check_dtype(entries, DENDRITE_TARGET, ("F32",))
    _check_dtype(entries, COHERENCE_TARGET, ("F32",))
    labels_entry = entries[LABELS]
    if len(labels_entry.shape) != 1:
        raise BatchError(
            f"anomaly_label must have shape [B], got {list(labels_entry.shape)}",
            ErrorType.INVALID_LABEL,
        )

    def read(name: str) -> NDArray[Any]:
        return read_array(data, body_start, entries[name])

    batch = validate_batch(
        read(INPUTS), read(LABELS), input_dim=input_dim, epochs=1 if epochs is None else epochs
    )
    targets = {
        name: _target(read(name), name, (batch.size, width)) if name in entries else None
        for name, width in ((DENDRITE_TARGET, dendrite_dim), (COHERENCE_TARGET, coherence_dim))
    }
    batch = replace(
        batch,
        dendrite_target=targets[DENDRITE_TARGET],
        coherence_target=targets[COHERENCE_TARGET],
    )
    return DecodedBatch(
        batch=batch,
        wire_dtype=_WIRE_DTYPES[entries[INPUTS].dtype],
        batch_id=metadata.get("batch_id"),
        run_id=metadata.get("run_id"),
        seq=seq,
        dendrite_target=targets[DENDRITE_TARGET],
        coherence_target=targets[COHERENCE_TARGET],
    )


def decode_inputs(
    data: bytes, *, input_dim: int, max_batch: int | None = None
) -> NDArray[np.float32]:
    """Parse an ``application/x-corteza-batch`` body for prediction: its validated ``inputs``.

    ``anomaly_label`` and the targets may be absent; when present (a training
    batch sent as it is) they are ignored. Raises :class:`~corteza.wire.BatchError`,
    and nothing else, for any body that does not hold valid inputs.
    """
    _, entries, body_start = _open(data, max_batch, required=(INPUTS,))
    return validate_inputs(read_array(data, body_start, entries[INPUTS]), input_dim=input_dim)


def _open(
    data: bytes, max_batch: int | None, *, required: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, Entry], int]:
    """The checks both decoders start with: a safetensors header of our protocol, known
    tensor names, the ``required`` ones present, ``inputs`` of a wire dtype and at most
    ``max_batch`` samples. Returns the metadata, the entries and where the data starts."""
    if len(data) == 0:
        raise malformed(f"the body is empty; send a safetensors file ({BATCH_CONTENT_TYPE})")
    header, body_start = read_header(data)
    metadata = read_metadata(header)
    _check_protocol(metadata)
    entries = read_entries(header, len(data) - body_start)
    for name in entries:
        if name not in _TENSORS:
            raise BatchError(
                f'Unknown tensor "{shorten(name)}" in batch; expected inputs, anomaly_label, '
                "dendrite_target or coherence_target",
                ErrorType.INVALID_REQUEST,
            )
    for name in required:
        if name not in entries:
            raise BatchError(f'Batch has no "{name}" tensor', ErrorType.INVALID_REQUEST)
    _check_dtype(entries, INPUTS, tuple(_WIRE_DTYPES))
    size = entries[INPUTS].shape[0] if entries[INPUTS].shape else 0
    if max_batch is not None and size > max_batch:
        raise BatchError(
            f"Batch too large: {size} samples, this server takes at most {max_batch}",
            ErrorType.INVALID_REQUEST,
        )
    return metadata, entries, body_start


def _check_protocol(metadata: dict[str, str]) -> None:
    version = metadata.get("protocol")
    if version is None:
        raise BatchError(
            f'Batch metadata has no "protocol" version; this server speaks {_MAJOR}.x',
            ErrorType.UNSUPPORTED_PROTOCOL,
        )
    match = _VERSION.fullmatch(version)
    if match is None or str(int(match[1])) != _MAJOR:
        raise BatchError(
            f"Unsupported protocol version {shorten(version)}; this server speaks {_MAJOR}.x",
            ErrorType.UNSUPPORTED_PROTOCOL,
        )


def _check_dtype(entries: dict[str, Entry], name: str, allowed: tuple[str, ...]) -> None:
    if name in entries and entries[name].dtype not in allowed:
        words = allowed[0] if len(allowed) == 1 else f"{', '.join(allowed[:-1])} or {allowed[-1]}"
        raise BatchError(
            f"{name} must be {words}, got {entries[name].dtype}", ErrorType.INVALID_REQUEST
        )


def _integer(metadata: dict[str, str], key: str) -> int | None:
    text = metadata.get(key)
    if text is None:
        return None
    if _INTEGER.fullmatch(text) is None:
        raise BatchError(
            f"{key} must be an integer, got {show(text)}",
            ErrorType.INVALID_REQUEST,
        )
    return int(text)


def _target(
    values: NDArray[np.float32], name: str, shape: tuple[int, int]
) -> NDArray[np.float32] | None:
    """The target rows; a row that is all NaN means "no target for this sample", as a
    JSON sample without one (None when no sample has one). Any other NaN or Inf is refused."""
    if values.shape != shape:
        raise BatchError(
            f"{name} must have shape {list(shape)}, got {list(values.shape)}",
            ErrorType.INVALID_REQUEST,
        )
    absent = np.isnan(values).all(axis=1)
    finite = np.isfinite(values).all(axis=1) | absent
    if absent.all():
        return None
    if not finite.all():
        i = int(np.argmin(finite))
        raise BatchError(
            f"Non-finite {name}: sample {i} contains NaN or Inf", ErrorType.NON_FINITE_INPUT, i
        )
    return values
