"""Two boxes, played by two launchers on this machine: ``--nnodes 2 --node-rank 0|1``.

The box of node rank 0 holds rank 0 and serves; the other joins it at
``--master-addr:--master-port`` (torchrun's static rendezvous) and binds no port.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from corteza.client import Client, free_port
from tests.server.distributed.cluster import Cluster

pytestmark = pytest.mark.distributed


def test_two_boxes_train_one_model(tmp_path: Path) -> None:
    rendezvous = str(free_port())
    boxes = []
    try:
        for node in (0, 1):
            options = ("--nnodes", "2", "--node-rank", str(node), "--master-port", rendezvous)
            boxes.append(Cluster(tmp_path, *options, "--no-auth", ranks=1, name=f"box{node}"))
        boxes[1].url = boxes[0].url  # one server: the box of rank 0
        boxes[1].port = boxes[0].port
        box0 = boxes[0]
        box0.wait_healthy()
        status = httpx.get(f"{box0.url}/status", timeout=10).json()
        assert status["distributed"] == {"world_size": 2, "backend": "gloo", "nodes": 2}
        rng = np.random.default_rng(1)
        with Client(box0.url) as client:
            x = rng.normal(size=(3, client.input_dim())).astype(np.float32)
            answer = client.train_batch(x, np.array([0, 1, 0], np.float32))
        assert answer.batch_size == 3 and answer.step == 1
        assert box0.stop() == 0  # rank 0 stops the group: the other box ends by itself
        assert boxes[1].process.wait(60) == 0
    finally:
        for box in boxes:
            box.kill()
    assert "ranks: 2 (gloo, 2 nodes), rank 0 serves" in boxes[0].text()
    assert boxes[0].digests() == {0: (1, boxes[1].digests()[1][1])}
