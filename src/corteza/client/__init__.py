"""The local side: a torch-free client, the embedded local server, synthetic data."""

from corteza.client.client import Client, encode_json_batch
from corteza.client.errors import (
    ConnectError,
    CortezaError,
    DimensionMismatchError,
    InternalServerError,
    InvalidBatchError,
    InvalidDataError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    ServerError,
    TimeoutError,
    TrainingDivergedError,
    TransportError,
    parse_error,
)
from corteza.client.local import LocalServer, free_port
from corteza.client.synthetic import RECIPES, Dataset, make_dataset

__all__ = [
    "RECIPES",
    "Client",
    "ConnectError",
    "CortezaError",
    "Dataset",
    "DimensionMismatchError",
    "InternalServerError",
    "InvalidBatchError",
    "InvalidDataError",
    "InvalidRequestError",
    "LocalServer",
    "NotFoundError",
    "ProtocolError",
    "ServerError",
    "TimeoutError",
    "TrainingDivergedError",
    "TransportError",
    "encode_json_batch",
    "free_port",
    "make_dataset",
    "parse_error",
]
