"""Jobs that train on the server: what ``POST /v1/jobs`` takes and what ``GET`` answers.

A job trains a dataset the server already holds (named by its sha256) for a
number of epochs, in batches whose order is a pure function of ``(seed,
epoch)`` (:func:`corteza.wire.holdout.batch_order`), exactly as ``corteza
train`` would stream it. Its batches are the run ``job-<id>`` in the server's
run book, so a restarted server resumes the job at the exact batch.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LrSchedule = Literal["none", "cosine"]
JobState = Literal["queued", "running", "finished", "cancelled", "failed"]
FINAL_STATES = frozenset({"finished", "cancelled", "failed"})
# Measured: benchmarks/RESULTS.md, "Learning-rate schedule" (better or equal on both sets).
DEFAULT_LR_SCHEDULE: LrSchedule = "cosine"
DEFAULT_WARMUP = 0.05  # share of a cosine job's steps spent warming up
MAX_JOB_EPOCHS = 10_000
MAX_QUEUED_JOBS = 32  # jobs waiting behind the one that trains; more are refused (429)
KEEP_EPOCHS = 100  # epoch scores a record keeps: the last ones, and the best


class JobSpec(BaseModel):
    """Body of ``POST /v1/jobs``: what to train, how long, and when to stop early.

    Infinity and NaN are refused (the jobs file is strict JSON, and no loss is <= NaN)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str = Field(description="sha256 of a dataset the server holds (GET /v1/datasets)")
    epochs: int = Field(default=1, ge=1, le=MAX_JOB_EPOCHS, description="passes over the data")
    batch_size: int = Field(default=32, ge=1, description="samples per batch")
    holdout: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="share held out and scored after every epoch"
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="of the split and batch order")
    feedback_every: int = Field(
        default=5,
        ge=0,
        description="send the dendrite head's proposals back every N batches, validated when "
        "the batch loss improved since the last feedback (0: no feedback)",
    )
    until_loss: float | None = Field(
        default=None, ge=0.0, description="stop once the mean loss of the last 5 batches is <= X"
    )
    patience: int | None = Field(
        default=None,
        ge=1,
        description="stop when the holdout ROC-AUC has not improved for this many epochs",
    )
    lr_schedule: LrSchedule = Field(
        default=DEFAULT_LR_SCHEDULE,
        description="cosine: linear warmup, then cosine decay to a tenth of the server's "
        "learning rate by the last batch; none: the server's rate throughout",
    )
    warmup: float = Field(
        default=DEFAULT_WARMUP, ge=0.0, lt=1.0, description="share of a cosine job's batches"
    )


class EpochScore(BaseModel):
    """One finished epoch: its mean training loss and, with a holdout, its score there."""

    model_config = ConfigDict(extra="allow")

    epoch: int  # 0-based
    train_loss: float | None = None  # mean over the epoch's batches trained by this process
    holdout_auc: float | None = None  # None: no holdout, or one class only
    holdout_loss: float | None = None  # binary cross-entropy of the anomaly probability
    improved: bool = False  # the best holdout ROC-AUC so far
    checkpoint: str | None = None  # the checkpoint saved at the epoch's end
    seconds: float = 0.0  # of the epoch's training and scoring in this process (not the save)


class JobRecord(BaseModel):
    """``GET /v1/jobs/{id}``: a job's spec, where it stands, and its epochs' scores."""

    model_config = ConfigDict(extra="allow")

    id: str
    run_id: str  # its batches in the run book (GET /v1/runs/{run_id})
    state: JobState
    spec: JobSpec
    dataset_name: str | None = None
    train_samples: int = 0
    holdout_samples: int = 0
    batches_per_epoch: int = 0
    total_batches: int = 0
    cursor: int = 0  # batches trained: the next seq of its run
    epoch: int = 0  # the epoch the cursor is in (0-based; == epochs when done)
    samples_trained: int = 0  # train samples x epochs when it finished every epoch
    first_loss: float | None = None  # of its first batch
    last_loss: float | None = None
    last_anomaly_prob: float | None = None  # mean anomaly probability of its last batch
    lr: float | None = None  # of its last batch
    base_lr: float | None = None  # the server's rate when the job began, restored at its end
    epochs_scored: list[EpochScore] = Field(default_factory=list)  # the last KEEP_EPOCHS, best
    epochs_dropped: int = 0  # older epoch scores no longer in epochs_scored
    best_epoch: int | None = None
    best_auc: float | None = None
    best_checkpoint: str | None = None  # under the checkpoint folder, kept from rotation
    best_bytes: int = 0  # the files of best_checkpoint (hard links: shared while rotated too)
    reached_target: bool = False  # until_loss was met
    stop_reason: str | None = None  # done, until_loss, patience, cancelled, or the error
    error: str | None = None
    cancel_requested: bool = False  # saved at once: a restart before the job stops cancels it
    created: float = 0.0  # unix seconds
    started: float | None = None
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


class JobList(BaseModel):
    """``GET /v1/jobs``: every job this server knows, oldest first."""

    model_config = ConfigDict(extra="allow")

    jobs: list[JobRecord]


def batches_per_epoch(train_samples: int, batch_size: int) -> int:
    return math.ceil(train_samples / batch_size)


def samples_before(seq: int, train_samples: int, batch_size: int) -> int:
    """Samples trained by the batches ``0 .. seq - 1`` (an epoch's last batch may be short)."""
    per_epoch = batches_per_epoch(train_samples, batch_size)
    epochs, batch = divmod(seq, per_epoch)
    return epochs * train_samples + min(batch * batch_size, train_samples)
