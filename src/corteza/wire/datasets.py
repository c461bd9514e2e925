"""Datasets stored on a server: what ``GET /v1/datasets`` answers, and the tus upload's words.

A dataset is named by the sha256 of the file it was uploaded from; the upload
speaks tus 1.0 (https://tus.io/protocols/resumable-upload) at
:data:`UPLOADS_PATH`, with ``filename`` and ``sha256`` in its ``Upload-Metadata``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DATASETS_PATH = "/v1/datasets"
UPLOADS_PATH = "/v1/datasets/uploads"
TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"  # the body of a tus PATCH
DATASET_HEADER = "Corteza-Dataset"  # on the PATCH that completes an upload: the stored sha256


class DatasetInfo(BaseModel):
    """One stored dataset."""

    model_config = ConfigDict(extra="allow")

    sha256: str
    name: str  # the file name it was uploaded under
    samples: int
    shape: list[int]  # [N, D] or [N, T, D]
    bytes: int  # what its arrays take on the server's disk
    added: float  # unix time


class UploadInProgress(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    sha256: str
    offset: int  # bytes the server has
    length: int


class DatasetList(BaseModel):
    """``GET /v1/datasets``: the datasets, the quota, and what uploads received."""

    model_config = ConfigDict(extra="allow")

    datasets: list[DatasetInfo]
    used_bytes: int
    quota_bytes: int | None
    upload_bytes_received: int  # data bytes PATCHed since the server started
    uploads: list[UploadInProgress]


class DatasetDeleted(BaseModel):
    """``DELETE /v1/datasets/{sha256}``."""

    model_config = ConfigDict(extra="allow")

    status: str  # "deleted"
    sha256: str
