"""After each epoch: the holdout's score, and the best checkpoint kept apart from rotation.

The holdout is scored in chunks on the worker's thread (eval mode, no
gradients), so batches that clients stream meanwhile interleave with it.
The best epoch's checkpoint is hard-linked (copied where links are not
possible) into ``<checkpoint_dir>/best/job-<id>/``, which pruning never
visits: it holds one checkpoint, replaced when an epoch beats it, and goes
when the job's record is forgotten (:data:`~corteza.server.jobs.book.KEEP_DONE`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from corteza.server.engine.worker import TrainingWorker
from corteza.wire.holdout import roc_auc

logger = logging.getLogger(__name__)

SCORE_CHUNK = 2048  # holdout samples per worker job
BEST_FOLDER = "best"
_EPS = 1e-7


@dataclass(frozen=True)
class HoldoutScore:
    auc: float | None  # None with one class only
    loss: float  # binary cross-entropy of the anomaly probability


async def score_holdout(
    worker: TrainingWorker,
    inputs: NDArray[np.float32],
    labels: NDArray[np.float32],
    rows: NDArray[np.intp],
) -> HoldoutScore:
    """ROC-AUC and loss of the model on ``inputs[rows]``, chunk by chunk."""
    probabilities = []
    for start in range(0, len(rows), SCORE_CHUNK):
        chunk = rows[start : start + SCORE_CHUNK]
        x = await asyncio.to_thread(_rows, inputs, chunk)
        probabilities.append((await worker.predict(x)).probabilities)
    p = np.clip(np.concatenate(probabilities).astype(np.float64), _EPS, 1 - _EPS)
    y = np.asarray(labels[rows], dtype=np.float64)
    loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    auc = roc_auc(y, p) if 0 < y.sum() < len(y) else None
    return HoldoutScore(auc, loss)


def _rows(inputs: NDArray[np.float32], rows: NDArray[np.intp]) -> NDArray[np.float32]:
    return np.ascontiguousarray(inputs[rows], dtype=np.float32)


def keep_best(root: Path, job_id: str, checkpoint: Path) -> Path:
    """Link ``checkpoint`` into ``root/best/job-<id>/`` in place of the one there; its path.

    The new one is complete before the old one goes, so a crash leaves one or both.
    """
    folder = best_folder(root, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / checkpoint.name
    if not final.exists():
        temp = folder / f".partial-{uuid.uuid4().hex}"
        shutil.copytree(checkpoint, temp, copy_function=_link_or_copy)
        os.rename(temp, final)
    for old in folder.iterdir():
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("best checkpoint of job %s: %s", job_id, final)
    return final


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links (some FUSE mounts)
        shutil.copy2(source, target)


def best_folder(root: Path, job_id: str) -> Path:
    return root / BEST_FOLDER / f"job-{job_id}"


def forget_best(root: Path, job_ids: list[str]) -> None:
    """Remove the best checkpoints of these jobs (their records are gone)."""
    for job_id in job_ids:
        folder = best_folder(root, job_id)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            logger.info("best checkpoint of job %s removed with its record", job_id)


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
