"""What the other side sends about a dataset, checked before anything is stored.

A dataset's id (the sha256 of its file), its file name, and the size of a
text file are refused with a :class:`DatasetError`: a status, a human
message and an ``error_type``, which the routes answer as they are.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from corteza.wire import ErrorType
from corteza.wire.data_formats import MAX_TEXT_BYTES, TEXT_FORMATS

SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME_MAX = 255


class DatasetError(Exception):
    """A dataset refused: the route answers ``status`` with this message and ``error_type``."""

    def __init__(self, status: int, message: str, error_type: ErrorType, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.extra = extra


def check_sha256(sha256: str) -> str:
    """A dataset id from the other side: 64 lowercase hex digits, or a 400 naming it."""
    if not SHA256.fullmatch(sha256):
        raise DatasetError(
            400,
            f"A dataset is named by the sha256 of its file: 64 hex digits, got {sha256[:80]!r}",
            ErrorType.INVALID_REQUEST,
        )
    return sha256


def check_name(name: str) -> str:
    """A file name from the other side: one plain name (a label; never made a path)."""
    if (
        not name
        or len(name) > _NAME_MAX
        or not name.isprintable()
        or name in (".", "..")
        or any(c in name for c in "/\\")
    ):
        raise DatasetError(
            400,
            f"A dataset's filename must be one plain file name of 1 to {_NAME_MAX} printable "
            f"characters, without / or \\, got {name[:80]!r}",
            ErrorType.INVALID_REQUEST,
        )
    return name


def check_text_size(name: str, size: int) -> None:
    """Refuse a .json or .csv file over :data:`MAX_TEXT_BYTES` (413): text is parsed in memory."""
    if Path(name).suffix.lower() in TEXT_FORMATS and size > MAX_TEXT_BYTES:
        raise DatasetError(
            413,
            f"{name} is {size_words(size)}: a .json or .csv dataset may be at most "
            f"{size_words(MAX_TEXT_BYTES)} (the server parses text in memory); save it as .npz "
            "(numpy.savez), which has no such limit",
            ErrorType.PAYLOAD_TOO_LARGE,
        )


def error_type(code: str) -> ErrorType:
    """The wire's code for a data file's failure (all of them are :class:`ErrorType` values)."""
    try:
        return ErrorType(code)
    except ValueError:
        return ErrorType.INVALID_DATA


def size_words(size: int) -> str:
    """A size in the unit that reads best: ``26.4 kB``, ``1.5 MB``, ``20.0 GB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e3:.1f} kB"
