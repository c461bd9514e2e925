"""The safetensors container, read strictly and written for BF16.

A safetensors file is an 8-byte little-endian header length ``N``, ``N``
bytes of JSON header (tensor name -> ``dtype``, ``shape``, ``data_offsets``,
plus an optional ``__metadata__`` of strings), then the tensor bytes. This
module knows the container only; what the tensors of a batch mean is
:mod:`corteza.wire.binary`'s business.

Reading does not use the library: every malformed file, however it is
broken, becomes a :class:`~corteza.wire.BatchError` of type
:attr:`ErrorType.MALFORMED_BODY` with a clear message, never another
exception. Nothing is trusted: the header length is bounded (1 MiB) and must
fit in the body, keys must be unique, dtypes known, shapes sane, metadata
valid Unicode, and the tensors must tile the byte buffer exactly (no
overlaps, gaps or trailing bytes), as the reference implementation requires.
Arrays are read with ``numpy.frombuffer`` and copied to writable float32
(torch cannot wrap read-only memory).

Writing (:func:`save`) serves BF16, which numpy cannot name and so
``safetensors.numpy.save`` cannot write: the file is laid out here, ordered
and padded the way the library does it.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corteza.wire.errors import BatchError, ErrorType

MAX_HEADER_BYTES = 1 << 20  # a batch's header is a few hundred bytes

# Every safetensors dtype, so that a known-but-refused one gets a precise message.
_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
_MAX_NDIM = 8
_MAX_ELEMENTS = 1 << 60  # numpy refuses shapes whose nominal size overflows intp


@dataclass(frozen=True)
class Entry:
    """One tensor of the header: its dtype code, shape and byte span in the buffer."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


# ---------------------------------------------------------------- write


def save(tensors: dict[str, NDArray[Any]], metadata: dict[str, str]) -> bytes:
    """A safetensors file; ``tensors`` hold little-endian data, BF16 as ``<u2``."""
    # Widest first, then by name, as the library orders them: every tensor stays aligned.
    names = sorted(tensors, key=lambda n: (-tensors[n].dtype.itemsize, n))
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in names:
        array = tensors[name]
        code = "BF16" if array.dtype == np.dtype("<u2") else _code(array.dtype)
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    parts = [struct.pack("<Q", len(text)), text]
    parts += [np.ascontiguousarray(tensors[n]).tobytes() for n in names]
    return b"".join(parts)


def _code(dtype: np.dtype[Any]) -> str:
    return {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16"}[dtype]


# ---------------------------------------------------------------- read


def malformed(message: str) -> BatchError:
    """A container fault: the server answers 400, as for invalid JSON."""
    return BatchError(f"Malformed batch: {message}", ErrorType.MALFORMED_BODY)


def read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The parsed JSON header and the offset where the tensor bytes begin."""
    if len(data) < 8:
        raise malformed(f"{len(data)} bytes is too short for a safetensors header")
    (length,) = struct.unpack_from("<Q", data)
    if length > MAX_HEADER_BYTES:
        raise malformed(f"header of {length} bytes exceeds the limit of {MAX_HEADER_BYTES}")
    if length > len(data) - 8:
        raise malformed(f"header claims {length} bytes but only {len(data) - 8} follow")
    try:
        text = bytes(data[8 : 8 + length]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed(f"header is not UTF-8 (byte {exc.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        raise malformed(f'duplicate key "{shorten(exc.key)}" in header') from None
    except (ValueError, RecursionError) as exc:
        raise malformed(f"header is not valid JSON: {shorten(str(exc), 100)}") from None
    if not isinstance(header, dict):
        raise malformed("header must be a JSON object")
    return header, 8 + length


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def read_metadata(header: dict[str, Any]) -> dict[str, str]:
    """The header's ``__metadata__`` (empty when absent), checked to be valid strings."""
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise malformed("__metadata__ must map strings to strings")
    for key, value in metadata.items():
        if not _is_utf8(key) or not _is_utf8(value):  # a lone surrogate, "\ud800"
            raise malformed(f"__metadata__ {show(key)} is not valid Unicode")
    return metadata


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_entries(header: dict[str, Any], buffer_size: int) -> dict[str, Entry]:
    """The header's tensors, checked to tile a buffer of ``buffer_size`` bytes exactly."""
    entries: dict[str, Entry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shown = shorten(name)
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise malformed(f'tensor "{shown}" must have exactly dtype, shape and data_offsets')
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
            raise malformed(f'tensor "{shown}" has unknown dtype {show(dtype)}')
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(_is_count(d) for d in shape)
            or math.prod(max(d, 1) for d in shape) > _MAX_ELEMENTS
        ):
            raise malformed(f'tensor "{shown}" has an invalid shape {show(shape)}')
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]
        ):
            raise malformed(f'tensor "{shown}" has invalid data_offsets {show(offsets)}')
        begin, end = offsets
        if end > buffer_size:
            raise malformed(
                f'tensor "{shown}" data_offsets [{begin}, {end}] run past the '
                f"{buffer_size}-byte buffer (truncated body?)"
            )
        expected = math.prod(shape) * _ITEMSIZE[dtype]
        if end - begin != expected:
            raise malformed(
                f'tensor "{shown}" is {dtype} {shape} ({expected} bytes) but its '
                f"data_offsets span {end - begin} bytes"
            )
        entries[name] = Entry(dtype, tuple(shape), begin, end)
    position = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            raise malformed(
                f'tensor "{shorten(name)}" starts at byte {entry.begin}, expected {position}; '
                "tensors must tile the buffer without gaps or overlaps"
            )
        position = entry.end
    if position != buffer_size:
        raise malformed(f"{buffer_size - position} trailing bytes after the last tensor")
    return entries


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_array(data: bytes, body_start: int, entry: Entry) -> NDArray[Any]:
    """An F32, F16, BF16 or U8 tensor as a fresh, writable, native-endian copy.

    F16 and BF16 become float32; torch cannot wrap the read-only body.
    """
    wire = {"F32": "<f4", "F16": "<u2", "BF16": "<u2", "U8": "u1"}[entry.dtype]
    count = math.prod(entry.shape)
    raw = np.frombuffer(data, dtype=wire, count=count, offset=body_start + entry.begin)
    if entry.dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry.shape)
    if entry.dtype == "F16":
        return np.take(_f16_table(), raw).reshape(entry.shape)
    return raw.astype(raw.dtype.newbyteorder("=")).reshape(entry.shape)


@functools.cache
def _f16_table() -> NDArray[np.float32]:
    """The float32 of every f16 bit pattern: a lookup is twice as fast as numpy's cast."""
    return np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


# ---------------------------------------------------------------- words


def show(value: object) -> str:
    """A header value for a message, as JSON, cut short."""
    try:
        return shorten(json.dumps(value))
    except (ValueError, RecursionError):
        return f"<{type(value).__name__}>"


def shorten(text: str, limit: int = 40) -> str:
    """Cut short, and escape lone surrogates so that the message encodes as UTF-8."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else f"{text[:limit]}..."
