"""``Cadence``: the one policy of feedback and ``until_loss`` that fit and the stream share."""

from __future__ import annotations

from corteza.client.training.progress import UNTIL_WINDOW, Cadence


def test_feedback_comes_every_n_batches_counted_one_at_a_time() -> None:
    cadence = Cadence(feedback_every=3)
    assert [n for n in range(1, 13) if cadence.feedback_due(n)] == [3, 6, 9, 12]


def test_batches_counted_several_at_once_get_feedback_at_the_first_past_the_mark() -> None:
    cadence = Cadence(feedback_every=3)
    assert [n for n in (1, 5, 6, 7, 8, 20, 22, 23) if cadence.feedback_due(n)] == [5, 8, 20, 23]


def test_no_feedback_with_zero() -> None:
    cadence = Cadence(feedback_every=0)
    assert not any(cadence.feedback_due(n) for n in range(1, 50))


def test_feedback_is_validated_when_the_loss_improved_on_the_last_sent() -> None:
    cadence = Cadence()
    assert cadence.validates(5.0)  # the first is
    cadence.feedback_sent(5.0)
    assert cadence.validates(4.0) and not cadence.validates(5.0) and not cadence.validates(6.0)
    cadence.feedback_sent(6.0)  # compared with the last sent, not the best
    assert cadence.validates(5.5)


def test_until_loss_averages_the_last_batches() -> None:
    cadence = Cadence(until_loss=1.0)
    losses = [9.0] + [1.0] * (UNTIL_WINDOW - 1)
    assert not cadence.reached(losses)  # 9 is still in the window
    assert cadence.reached([*losses, 1.0])
    assert not cadence.reached([0.0] * (UNTIL_WINDOW - 1))  # too few to judge
    assert not Cadence().reached([0.0] * 10)  # no target
