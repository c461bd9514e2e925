"""``roc_auc`` against cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from corteza.client.data.metrics import roc_auc


def test_perfect_separation() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0


def test_perfectly_wrong() -> None:
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0


def test_one_pair_out_of_four_misordered() -> None:
    # pairs (anomaly, normal): (0.35, 0.1) yes, (0.35, 0.4) no, (0.8, 0.1) yes, (0.8, 0.4) yes
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_a_tie_between_classes_counts_one_half() -> None:
    # pairs: (0.5 vs 0.5) 1/2, (0.5 vs 0.2) 1, (0.9 vs 0.5) 1, (0.9 vs 0.2) 1 -> 3.5 / 4
    assert roc_auc([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.2]) == 0.875


def test_all_scores_equal_is_chance() -> None:
    assert roc_auc([0, 1, 0, 1, 1], [3, 3, 3, 3, 3]) == 0.5


def test_ties_within_a_class_do_not_matter() -> None:
    # anomalies 2, 2 over normals 1, 1, 2: pairs 2>1 four times, 2=2 twice -> (4 + 1) / 6
    assert roc_auc([1, 1, 0, 0, 0], [2, 2, 1, 1, 2]) == pytest.approx(5 / 6)


def test_agrees_with_counting_pairs_on_random_data() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 10, 200).astype(float)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(labels, scores) == pytest.approx(wins / (pos.size * neg.size))


def test_infinite_scores_rank_normally() -> None:
    assert roc_auc([0, 1, 0, 1], [-np.inf, np.inf, 0.0, 1.0]) == 1.0


def test_float_labels_are_accepted() -> None:
    assert roc_auc(np.array([0.0, 1.0], dtype=np.float32), [0.2, 0.7]) == 1.0


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], []])
def test_one_class_only_is_refused(labels: list[int]) -> None:
    with pytest.raises(ValueError, match="ROC-AUC needs both classes"):
        roc_auc(labels, [0.5] * len(labels))


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        roc_auc([0, 1, 0], [0.1, 0.2])


def test_labels_other_than_0_or_1_are_refused() -> None:
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])


def test_nan_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="scores contain NaN"):
        roc_auc([0, 1], [0.1, float("nan")])
