"""Scores of a detector on labelled data, in numpy (the client has no torch).

:func:`roc_auc` lives in :mod:`corteza.wire.holdout`: a job on the server scores
its holdout with the same function.
"""

from __future__ import annotations

from corteza.wire.holdout import roc_auc

__all__ = ["roc_auc"]
