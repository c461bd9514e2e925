"""``GET /info`` names the server's per-request limits, so a client refuses before sending."""

from __future__ import annotations

from corteza.client import Client
from corteza.server import Settings
from tests.conftest import TINY, start_server, stop_server


def test_info_carries_the_limits_the_server_enforces() -> None:
    live = start_server(Settings(model=TINY, seed=0, max_batch_samples=64, max_seq_len=8))
    try:
        with live.http() as http:
            assert http.get("/info").json()["limits"] == {"max_batch_samples": 64, "max_seq_len": 8}
        with Client(live.url) as client:
            limits = client.info().limits
        assert limits is not None
        assert (limits.max_batch_samples, limits.max_seq_len) == (64, 8)
    finally:
        stop_server(live)
