"""The server's error_type maps to one exception class each."""

from __future__ import annotations

import pytest

from corteza.client import (
    CortezaError,
    DimensionMismatchError,
    InternalServerError,
    InvalidBatchError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    TrainingDivergedError,
    parse_error,
)


@pytest.mark.parametrize(
    ("status", "error_type", "cls"),
    [
        (422, "dimension_mismatch", DimensionMismatchError),
        (422, "non_finite_input", InvalidBatchError),
        (422, "invalid_label", InvalidBatchError),
        (422, "empty_batch", InvalidBatchError),
        (422, "ragged_batch", InvalidBatchError),
        (422, "invalid_request", InvalidRequestError),
        (400, "malformed_body", InvalidRequestError),
        (404, "not_found", NotFoundError),
        (422, "training_diverged", TrainingDivergedError),
        (413, "quota_exceeded", PayloadTooLargeError),
        (422, "hash_mismatch", InvalidRequestError),
        (507, "insufficient_storage", InternalServerError),
        (500, "internal_error", InternalServerError),
        (503, "something_new", InternalServerError),
        (418, "something_new", InvalidRequestError),
    ],
)
def test_error_type_maps_to_its_class(status: int, error_type: str, cls: type) -> None:
    body = {"status": "error", "error": "the words", "error_type": error_type}
    error = parse_error(status, body)
    assert type(error) is cls
    assert isinstance(error, ServerError)
    assert isinstance(error, CortezaError)
    assert str(error) == "the words"
    assert error.status == status
    assert error.error_type == error_type


def test_a_body_that_is_not_ours_still_gives_a_clear_error() -> None:
    error = parse_error(502, "<html>Bad Gateway</html>")
    assert type(error) is InternalServerError
    assert str(error) == "HTTP 502"


def test_the_offending_sample_is_exposed() -> None:
    body = {
        "error": "Input dimension mismatch: expected 32D, got 3D",
        "error_type": "dimension_mismatch",
        "sample": 4,
    }
    error = parse_error(422, body)
    assert isinstance(error, DimensionMismatchError)
    assert error.sample == 4
