"""``ApiError.from_batch_error``: the one mapping of a refused batch to an HTTP status."""

from __future__ import annotations

import pytest

from corteza.server.edge.errors import ApiError
from corteza.wire import BatchError, ErrorType


@pytest.mark.parametrize(
    ("error", "status", "extra"),
    [
        (BatchError("Malformed batch: no header", ErrorType.MALFORMED_BODY), 400, {}),
        (BatchError("Unsupported protocol version 9", ErrorType.UNSUPPORTED_PROTOCOL), 400, {}),
        (BatchError("NaN in sample 3", ErrorType.INVALID_REQUEST, sample=3), 422, {"sample": 3}),
        (BatchError("Empty batch", ErrorType.INVALID_REQUEST), 422, {}),
    ],
)
def test_a_refused_batch_maps_to_one_status(
    error: BatchError, status: int, extra: dict[str, int]
) -> None:
    api = ApiError.from_batch_error(error)
    assert (api.status, api.message, api.error_type, api.extra) == (
        status,
        error.message,
        error.error_type,
        extra,
    )
