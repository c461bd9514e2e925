"""Protocol errors on ``WS /v1/train/stream``: an error message, a close code with a JSON
reason, and one WARNING line without a traceback (never a 1011 and an ERROR)."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from corteza.wire import PROTOCOL_VERSION, encode_batch
from tests.conftest import TINY, LiveServer

STREAM_LOGGER = "corteza.server.edge.routes.stream"


def _ws(live: LiveServer) -> Any:
    return connect(live.url.replace("http://", "ws://") + "/v1/train/stream")


def _hello(ws: Any) -> str:
    ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": None}))
    run_id: str = json.loads(ws.recv(timeout=30))["run_id"]
    return run_id


def _ending(ws: Any) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """The error message, then the close code and its JSON reason."""
    error = json.loads(ws.recv(timeout=30))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    return error, closed.value.rcvd.code, json.loads(closed.value.rcvd.reason)


def _one_warning(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING
    assert records[0].name == STREAM_LOGGER
    assert records[0].exc_info is None
    return records[0]


def test_a_binary_hello_is_refused_with_1003(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with _ws(live_server) as ws:
        ws.send(b"\x00\x01binary")
        error, code, reason = _ending(ws)
    message = "expected a hello message first (JSON in a text frame), got a binary frame"
    assert error == {
        "type": "error",
        "seq": None,
        "error": message,
        "error_type": "invalid_request",
        "next_seq": 0,
    }
    assert code == 1003
    assert reason == {"error_type": "invalid_request", "next_seq": 0, "error": reason["error"]}
    assert message.startswith(reason["error"])
    record = _one_warning(caplog)
    assert record.getMessage() == f"stream before hello closed (1003): {message} [invalid_request]"


def test_a_deeply_nested_hello_is_refused_with_1007(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with _ws(live_server) as ws:
        ws.send("[" * 4000)
        error, code, reason = _ending(ws)
    assert error["error"] == "hello is not valid JSON: nested too deeply"
    assert (error["error_type"], code) == ("malformed_body", 1007)
    assert reason["error"] == "hello is not valid JSON: nested too deeply"
    _one_warning(caplog)


def test_a_huge_hello_is_refused_unparsed(live_server: LiveServer) -> None:
    with _ws(live_server) as ws:
        ws.send("[" * 200_000)
        error, code, _ = _ending(ws)
    assert error["error"] == "hello too long: 200000 characters; at most 4096"
    assert code == 1007


def test_a_text_frame_where_a_batch_is_expected_is_refused_with_1003(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with _ws(live_server) as ws:
        run_id = _hello(ws)
        ws.send(json.dumps({"type": "hello"}))
        error, code, reason = _ending(ws)
    assert error["error"] == "expected a batch (a binary frame), got a text frame"
    assert (error["next_seq"], code) == (0, 1003)
    assert reason["next_seq"] == 0
    record = _one_warning(caplog)
    assert record.getMessage().startswith(f"stream {run_id} closed (1003): ")


def test_a_refused_batch_closes_with_1008_and_a_json_reason(live_server: LiveServer) -> None:
    with _ws(live_server) as ws:
        run_id = _hello(ws)
        X = np.ones((2, 3), dtype=np.float32)
        ws.send(encode_batch(X, [0, 1], run_id=run_id, seq=0))
        error, code, reason = _ending(ws)
    assert error["error"] == f"Input dimension mismatch: expected {TINY.input_dim}D, got 3D"
    assert code == 1008
    assert reason == {
        "error_type": "dimension_mismatch",
        "next_seq": 0,
        "error": f"Input dimension mismatch: expected {TINY.input_dim}D, got 3D",
    }
