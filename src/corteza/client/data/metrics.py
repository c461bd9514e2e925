"""Scores of a detector on labelled data, in numpy (the client has no torch)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


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
