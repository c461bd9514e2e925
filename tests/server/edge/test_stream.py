"""``WS /v1/train/stream`` against a real uvicorn: handshake, window, acks in order, resume."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from websockets.sync.client import connect

from corteza.wire import PROTOCOL_VERSION, encode_batch
from tests.conftest import TINY, LiveServer


def _ws(live: LiveServer) -> Any:
    return connect(live.url.replace("http://", "ws://") + "/v1/train/stream")


def _hello(ws: Any, run_id: str | None = None, window: int = 4) -> dict[str, Any]:
    ws.send(
        json.dumps(
            {"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": run_id, "window": window}
        )
    )
    welcome: dict[str, Any] = json.loads(ws.recv(timeout=30))
    return welcome


def _frame(run_id: str, seq: int) -> bytes:
    X = np.random.default_rng(seq).normal(size=(4, TINY.input_dim)).astype(np.float32)
    return encode_batch(X, [0, 1, 0, 1], run_id=run_id, seq=seq)


def test_a_window_of_batches_is_acknowledged_in_order(live_server: LiveServer) -> None:
    with _ws(live_server) as ws:
        welcome = _hello(ws, window=4)
        assert welcome["type"] == "welcome"
        assert welcome["next_seq"] == 0
        assert welcome["window"] == 4
        assert welcome["input_dim"] == TINY.input_dim
        run_id = welcome["run_id"]
        for seq in range(4):  # a full window before reading anything
            ws.send(_frame(run_id, seq))
        acks = [json.loads(ws.recv(timeout=30)) for _ in range(4)]
        for seq in range(4, 6):
            ws.send(_frame(run_id, seq))
        acks += [json.loads(ws.recv(timeout=30)) for _ in range(2)]
    assert [a["seq"] for a in acks] == [0, 1, 2, 3, 4, 5]
    assert all(a["type"] == "ack" and a["replayed"] is False for a in acks)
    assert [a["step"] for a in acks] == [1, 2, 3, 4, 5, 6]
    assert len(acks[0]["dendrite_adjustments"]) == 16
    assert live_server.state.runs.open(run_id).next_seq == 6


def test_resuming_a_run_replays_and_continues(live_server: LiveServer) -> None:
    with _ws(live_server) as ws:
        run_id = _hello(ws)["run_id"]
        for seq in range(3):
            ws.send(_frame(run_id, seq))
        [json.loads(ws.recv(timeout=30)) for _ in range(3)]
    with _ws(live_server) as ws:
        welcome = _hello(ws, run_id=run_id)
        assert welcome["run_id"] == run_id
        assert welcome["next_seq"] == 3
        ws.send(_frame(run_id, 2))  # sent before the drop, ack lost: replayed
        ws.send(_frame(run_id, 3))
        acks = [json.loads(ws.recv(timeout=30)) for _ in range(2)]
    assert [(a["seq"], a["replayed"]) for a in acks] == [(2, True), (3, False)]
    assert live_server.state.runs.open(run_id).next_seq == 4
    assert live_server.state.stats.total_samples == 16


def test_a_seq_ahead_ends_the_stream_with_next(live_server: LiveServer) -> None:
    with _ws(live_server) as ws:
        run_id = _hello(ws)["run_id"]
        ws.send(_frame(run_id, 5))
        error = json.loads(ws.recv(timeout=30))
    assert error == {
        "type": "error",
        "seq": 5,
        "error": f"Out of order: run {run_id} expects seq 0, got 5",
        "error_type": "out_of_order",
        "next_seq": 0,
    }
    assert live_server.state.stats.total_batches == 0


def test_a_bad_frame_is_refused_by_name(live_server: LiveServer) -> None:
    with _ws(live_server) as ws:
        run_id = _hello(ws)["run_id"]
        ws.send(encode_batch(np.ones((2, 3)), [0, 1], run_id=run_id, seq=0))
        error = json.loads(ws.recv(timeout=30))
    assert error["error"] == "Input dimension mismatch: expected 32D, got 3D"
    assert error["error_type"] == "dimension_mismatch"
    assert error["next_seq"] == 0


def test_an_unknown_protocol_is_refused(live_server: LiveServer) -> None:
    with _ws(live_server) as ws:
        ws.send(json.dumps({"type": "hello", "protocol": "2.0", "run_id": None}))
        error = json.loads(ws.recv(timeout=30))
    assert error["error"] == "Unsupported protocol version 2.0; this server speaks 1.x"
    assert error["error_type"] == "unsupported_protocol"


def test_a_drop_between_apply_and_ack_applies_nothing_twice(live_server: LiveServer) -> None:
    """The connection dies after the server applied seq 0 and before the ack was read."""
    import time

    with _ws(live_server) as ws:
        run_id = _hello(ws)["run_id"]
        ws.send(_frame(run_id, 0))
        deadline = time.monotonic() + 30
        while live_server.state.runs.open(run_id).next_seq == 0:  # applied on the server...
            assert time.monotonic() < deadline
            time.sleep(0.01)
    # ...and the ack never read: the client cannot know, so it sends seq 0 again.
    with _ws(live_server) as ws:
        welcome = _hello(ws, run_id=run_id)
        ws.send(_frame(run_id, 0))
        ack = json.loads(ws.recv(timeout=30))
    assert welcome["next_seq"] == 1
    assert (ack["seq"], ack["replayed"]) == (0, True)
    assert live_server.state.runs.open(run_id).next_seq == 1
    assert live_server.state.stats.total_batches == 1
