"""The split, the batch order and the held-out score: the same on both sides of the wire.

``corteza train`` on the PC and a job on the server split a dataset and order its
batches with these functions, so a job trains exactly what the same command
would stream. numpy only.

>>> train, held = split_indices(np.array([0, 1, 0, 1, 0], dtype=np.float32), 0.4, seed=0)
>>> len(train), len(held)
(3, 2)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def batch_order(n: int, *, seed: int, epoch: int) -> NDArray[np.int64]:
    """The sample order of one epoch: a pure function of (seed, epoch).

    A client that resumes a run, or a job that resumes after a restart,
    regenerates any batch from the data alone.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def split_indices(
    labels: NDArray[np.float32], holdout: float, seed: int = 0
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """``(train, held)`` row indices of a seeded, stratified split, each in ascending order.

    ``round(holdout * N)`` samples are held out, anomalies and normal samples in
    proportion: each class is shuffled by ``seed`` and its first share held out.
    The same (labels, holdout, seed) always gives the same split.
    """
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be between 0 and 1, got {holdout}")
    n = len(labels)
    k = round(holdout * n)
    if not 0 < k < n:
        raise ValueError(f"holdout={holdout} of {n} samples leaves one part empty")
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    anomalies = np.flatnonzero(y == 1)
    normal = np.flatnonzero(y != 1)
    k_normal = min(k - round(k * anomalies.size / n), normal.size)
    held = np.concatenate(
        [rng.permutation(anomalies)[: k - k_normal], rng.permutation(normal)[:k_normal]]
    )
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep), np.sort(held)


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve: the chance that an anomaly outscores a normal sample.

    Rank-based (Mann-Whitney U); tied scores share their average rank, so a tie
    between an anomaly and a normal sample counts one half. ``labels`` are 0/1;
    higher ``scores`` mean "more anomalous". Raises ``ValueError`` when only one
    class is present, the lengths differ, a label is not 0/1 or a score is NaN.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not ((y == 0) | (y == 1)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        only = f"all {int(y[0])}" if y.size else "empty"
        raise ValueError(f"ROC-AUC needs both classes, but the labels are {only}")
    order = np.argsort(s, kind="stable")
    sorted_scores = s[order]
    # 1-based ranks, each run of equal scores given the mean of its ranks
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], s.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    u = ranks[y == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))
