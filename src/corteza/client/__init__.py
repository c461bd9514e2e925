"""The local side: a torch-free client, the embedded local server, synthetic data."""

import warnings

from corteza.client.async_client import AsyncClient
from corteza.client.backoff import Backoff
from corteza.client.client import Client, Predictions
from corteza.client.data.datasets import (
    Dataset,
    batch_order,
    iter_batches,
    open_dataset,
    save_dataset,
    split,
)
from corteza.client.data.metrics import roc_auc
from corteza.client.data.synthetic import RECIPES, make_dataset
from corteza.client.errors import (
    ConnectError,
    CortezaError,
    DimensionMismatchError,
    ForbiddenError,
    InternalServerError,
    InvalidBatchError,
    InvalidDataError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    RequestTimeoutError,
    ServerError,
    TimeoutException,
    TrainingDivergedError,
    TransportError,
    UnauthorizedError,
    parse_error,
)
from corteza.client.events import Event
from corteza.client.local import LocalServer, free_port
from corteza.client.onnx_local import OnnxModel
from corteza.client.payloads import encode_json_batch
from corteza.client.saved_server import SavedServer, load_saved_server, save_server
from corteza.client.training.stream import StreamingTrainer

__all__ = [
    "RECIPES",
    "AsyncClient",
    "Backoff",
    "Client",
    "ConnectError",
    "CortezaError",
    "Dataset",
    "DimensionMismatchError",
    "Event",
    "ForbiddenError",
    "InternalServerError",
    "InvalidBatchError",
    "InvalidDataError",
    "InvalidRequestError",
    "LocalServer",
    "NotFoundError",
    "OnnxModel",
    "PayloadTooLargeError",
    "Predictions",
    "ProtocolError",
    "RequestTimeoutError",
    "SavedServer",
    "ServerError",
    "StreamingTrainer",
    "TimeoutException",
    "TrainingDivergedError",
    "TransportError",
    "UnauthorizedError",
    "batch_order",
    "encode_json_batch",
    "free_port",
    "iter_batches",
    "load_saved_server",
    "make_dataset",
    "open_dataset",
    "parse_error",
    "roc_auc",
    "save_dataset",
    "save_server",
    "split",
]


def __getattr__(name: str) -> object:
    """``TimeoutError``: the deprecated name of :class:`TimeoutException` (PEP 562)."""
    if name == "TimeoutError":
        warnings.warn(
            "corteza.client.TimeoutError is deprecated (it shadows the builtin): "
            "use TimeoutException",
            DeprecationWarning,
            stacklevel=2,
        )
        return TimeoutException
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
