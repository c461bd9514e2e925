"""torchrun's arguments, a rank's slice and device, and what ``corteza serve`` refuses."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import torch

from corteza.server.distributed.group import DistributedGroup, DistributedSetupError, rank_device
from corteza.server.distributed.launch import rank_args, torchrun_args, without_launch_options
from tests.helpers import corteza


def test_the_launch_options_stay_with_the_launcher() -> None:
    args = ["--port", "0", "--nproc-per-node", "2", "--nnodes=1", "--max-restarts", "5", "-v"]
    assert without_launch_options(args) == ["--port", "0", "-v"]


def test_one_box_runs_standalone_and_several_meet_at_box_0() -> None:
    assert torchrun_args(["--port", "8000"], nproc_per_node=2) == [
        "--nproc-per-node=2",
        "--nnodes=1",
        "--max-restarts=3",
        "--standalone",
        "-m",
        "corteza",
        "serve",
        "--port",
        "8000",
    ]
    several = torchrun_args(
        [], nproc_per_node=4, nnodes=2, node_rank=1, master_addr="10.0.0.5", max_restarts=0
    )
    assert several == [
        "--nproc-per-node=4",
        "--nnodes=2",
        "--max-restarts=0",
        "--node-rank=1",
        "--master-addr=10.0.0.5",
        "--master-port=29500",
        "-m",
        "corteza",
        "serve",
    ]


def test_slices_are_contiguous_uneven_and_may_be_empty() -> None:
    group = DistributedGroup(0, 3, 0, "gloo", torch.device("cpu"), timedelta(seconds=9), 1.0)
    assert [group.bounds(7, r) for r in range(3)] == [(0, 2), (2, 4), (4, 7)]
    assert [group.bounds(2, r) for r in range(3)] == [(0, 0), (0, 1), (1, 2)]
    assert group.describe() == {"world_size": 3, "backend": "gloo", "nodes": 1}


def test_each_rank_gets_a_device_of_its_own() -> None:
    assert rank_device("cpu", 3) == torch.device("cpu")
    with pytest.raises(DistributedSetupError, match="CUDA \\(NCCL\\) or the CPU \\(gloo\\) only"):
        rank_device("mps", 0)
    if not torch.cuda.is_available():
        assert rank_device("auto", 1) == torch.device("cpu")
        with pytest.raises(DistributedSetupError, match="this machine has 0"):
            rank_device("cuda", 0)


def test_serve_refuses_a_heartbeat_as_long_as_the_timeout() -> None:
    result = corteza("serve", "--heartbeat-seconds", "10", "--collective-timeout", "10")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: distributed_heartbeat_s (10) must be shorter than distributed_timeout_s (10)"
    )


def test_serve_under_torchrun_does_not_launch_torchrun_again() -> None:
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    result = corteza("serve", "--nproc-per-node", "2", "--preset", "tiny", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --nproc-per-node: this process already runs under torchrun"
    )


def test_the_ranks_get_a_fixed_port_and_the_launchers_tunnel_host() -> None:
    args = ["--tunnel=ngrok", "--port", "0", "--nproc-per-node", "2", "--token", "t"]
    assert rank_args(args, 8123, "a.example") == [
        "--port",
        "0",
        "--token",
        "t",
        "--port",
        "8123",
        "--allowed-host",
        "a.example",
    ]
    assert rank_args(["--nnodes", "1"], 8000, None) == ["--port", "8000"]
