"""Dendritic feedback that learns: validated adjustments teach the dendrite head only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from corteza.client import Client, NotFoundError
from tests.conftest import TINY, LiveServer
from tests.helpers import assert_same_model, snapshot_model

TARGET = [0.5, -0.5] * 8


def _mse(dendrites: np.ndarray) -> float:
    return float(((dendrites - np.asarray(TARGET)) ** 2).mean())


def test_validated_feedback_moves_the_dendrites_toward_the_target(
    live_server: LiveServer, figure: Callable[[str], None]
) -> None:
    rng = np.random.default_rng(0)
    X, other = rng.normal(size=(8, TINY.input_dim)), rng.normal(size=(16, TINY.input_dim))
    with Client(live_server.url) as client:
        batch_id = client.train_batch(X, [0, 1] * 4).batch_id
        client.train_batch(other[:4], [1, 0, 1, 0])  # a later batch: feedback names the first
        before, anomaly_before = client.predict(X), client.predict(other).anomaly_prob
        for _ in range(120):
            answer = client.send_feedback(TARGET, validated=True, batch_id=batch_id)
        after, anomaly_after = client.predict(X), client.predict(other).anomaly_prob
        stats = client.status().estadisticas.feedback
        metrics = client.metrics()
    assert answer.applied is True
    assert answer.batch_id == batch_id
    drop = 1 - _mse(after.dendrites) / _mse(before.dendrites)
    moved = float(np.abs(anomaly_after - anomaly_before).max())
    figure(f"feedback: dendrite_mse_drop={drop:.1%} anomaly_moved_elsewhere={moved:.1e}")
    assert drop >= 0.9
    # Only the dendrite head moved: the anomaly outputs on other data are unchanged.
    assert moved < 1e-6
    assert stats.recibido == 120
    assert stats.exitoso == 120
    assert stats.dendrite_loss is not None and stats.dendrite_loss < 0.05
    assert metrics.feedback_received == 120


def test_reward_weights_the_step(live_server: LiveServer) -> None:
    """The step's rate is ``feedback_lr × reward``: reward 0 takes none, 0.1 a tenth of a step.

    AdamW's first step moves each weight by about its rate, whatever the gradient's size.
    """
    X = np.random.default_rng(1).normal(size=(4, TINY.input_dim))
    head = "capa5.dendrites.0.weight"
    lr = live_server.state.settings.feedback_lr
    with Client(live_server.url) as client:
        client.train_batch(X, [0, 1, 0, 1])
        before, start = snapshot_model(live_server.state), client.predict(X).dendrites
        zero = client.send_feedback(TARGET, validated=True, reward=0.0)
        unchanged = snapshot_model(live_server.state)
        tenth = client.send_feedback(TARGET, validated=True, reward=0.1)
        after, moved = snapshot_model(live_server.state), client.predict(X).dendrites
    assert zero.applied is True and tenth.applied is True
    assert_same_model(before, unchanged)
    step = np.abs(after["weights"][head].numpy() - unchanged["weights"][head].numpy()).max()
    assert 0.05 * lr < step <= 0.1 * lr * 1.01
    assert _mse(moved) < _mse(start)


def test_feedback_with_reward_zero_leaves_the_next_step_alone(live_server: LiveServer) -> None:
    """Reward 0 takes no step and leaves no trace in AdamW's moments: the next step is a
    first step, every weight moved by about the rate."""
    X = np.random.default_rng(2).normal(size=(4, TINY.input_dim))
    head = "capa5.dendrites.0.weight"
    lr = live_server.state.settings.feedback_lr
    with Client(live_server.url) as client:
        client.train_batch(X, [0, 1, 0, 1])
        for _ in range(5):
            assert client.send_feedback([-0.5, 0.5] * 8, validated=True, reward=0.0).applied
        before = snapshot_model(live_server.state)["weights"][head].numpy()
        client.send_feedback(TARGET, validated=True, reward=1.0)
        after = snapshot_model(live_server.state)["weights"][head].numpy()
    moved = np.abs(after - before)
    moved = moved[moved > 0]  # weights of units without gradient stay
    assert moved.max() <= lr * 1.01
    assert np.percentile(moved, 10) > 0.9 * lr


def test_feedback_without_batch_id_refers_to_the_latest_batch(live_server: LiveServer) -> None:
    with Client(live_server.url) as client:
        client.train_batch(np.ones((2, 32)), [0, 1])
        latest = client.train_batch(np.zeros((2, 32)), [1, 0]).batch_id
        answer = client.send_feedback(TARGET, validated=True)
    assert answer.batch_id == latest


def test_not_validated_feedback_is_recorded_only(live_server: LiveServer) -> None:
    with Client(live_server.url) as client:
        client.train_batch(np.ones((2, 32)), [0, 1])
        before = snapshot_model(live_server.state)
        answer = client.send_feedback(TARGET, validated=False)
    assert answer.applied is False
    assert answer.estadisticas.feedback.recibido == 1
    assert answer.estadisticas.feedback.exitoso == 0
    assert_same_model(before, snapshot_model(live_server.state))


def test_an_unknown_batch_is_a_404_and_changes_nothing(live_server: LiveServer) -> None:
    with Client(live_server.url) as client:
        client.train_batch(np.ones((2, 32)), [0, 1])
        before = snapshot_model(live_server.state)
        with pytest.raises(NotFoundError) as info:
            client.send_feedback(TARGET, validated=True, batch_id="feedfacecafebeef")
    assert info.value.status == 404
    assert str(info.value) == (
        "Unknown or expired batch_id 'feedfacecafebeef': feedback refers to one of the last "
        "64 batches"
    )
    assert info.value.error_type == "unknown_batch"
    assert live_server.state.stats.feedback_received == 0
    assert_same_model(before, snapshot_model(live_server.state))


def test_feedback_before_any_batch_is_recorded_only(live_server: LiveServer) -> None:
    before = snapshot_model(live_server.state)
    with Client(live_server.url) as client:
        answer = client.send_feedback(TARGET, validated=True)
    assert (answer.batch_id, answer.applied) == (None, False)
    assert answer.estadisticas.feedback.recibido == 1
    assert_same_model(before, snapshot_model(live_server.state))
