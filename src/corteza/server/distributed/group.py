"""Joining the process group torchrun prepared: which rank this is, its device, the groups.

torchrun (``torch.distributed.run``) starts every rank with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous in its environment. A world
of one (or no torchrun at all) is today's single process: :func:`join` returns
None and nothing here is used.

Two groups: the default one carries the data (NCCL on CUDA, one GPU per local
rank; gloo on the CPU) and a gloo *control* group carries the small headers
rank 0 sends before every operation (see :mod:`corteza.server.distributed.control`).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import PrefixStore, Store, TCPStore

from corteza.server.engine.device import device_name
from corteza.server.settings import Settings

logger = logging.getLogger(__name__)

LAUNCHER_PID_ENV = "CORTEZA_LAUNCHER_PID"  # set by `corteza serve --nproc-per-node N`
PR_SET_PDEATHSIG = 1


class DistributedSetupError(ValueError):
    """This rank cannot take part: a device it cannot have; the message is one line."""


@dataclass
class DistributedGroup:
    """This rank's place in the group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str  # of the data group: "nccl" or "gloo"
    device: torch.device
    timeout: timedelta  # of every collective, the control group's waits included
    heartbeat_s: float  # rank 0 sends a header at least this often
    control: Any = None  # the gloo ProcessGroup of the headers
    nodes: int = 1
    devices: list[str] = field(default_factory=list)  # per rank: "host cpu", "host cuda:1 (T4)"

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def bounds(self, size: int, rank: int | None = None) -> tuple[int, int]:
        """The contiguous slice ``[start, end)`` of a global batch of ``size`` rank trains.

        >>> group = DistributedGroup(1, 2, 1, "gloo", torch.device("cpu"), timedelta(1), 30.0)
        >>> group.bounds(5), group.bounds(1), group.bounds(1, rank=0)
        ((2, 5), (0, 0), (0, 1))
        """
        r = self.rank if rank is None else rank
        return (r * size) // self.world_size, ((r + 1) * size) // self.world_size

    def describe(self) -> dict[str, Any]:
        """The ``distributed`` block of ``/status`` and ``/info``."""
        return {"world_size": self.world_size, "backend": self.backend, "nodes": self.nodes}


_current: DistributedGroup | None = None


def current() -> DistributedGroup | None:
    """The group this process joined; None in a single process."""
    return _current


def world_size_from_env() -> int:
    """How many ranks torchrun started (1 without torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def rank_device(setting: str, local_rank: int) -> torch.device:
    """One device per local rank: ``cuda:LOCAL_RANK`` on CUDA, else the CPU.

    Raises :class:`DistributedSetupError` for MPS (no collective backend) and for
    more local ranks than GPUs.
    """
    if setting == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = setting.split(":")[0]
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if local_rank >= count:
            raise DistributedSetupError(
                f"local rank {local_rank} needs a GPU of its own and this machine has {count}: "
                "pass --nproc-per-node at most the number of GPUs, or --device cpu"
            )
        return torch.device("cuda", local_rank)
    raise DistributedSetupError(
        f"--device {setting}: several ranks train on CUDA (NCCL) or the CPU (gloo) only"
    )


def watch_parent() -> None:
    """Die with the launcher: SIGTERM when the process that started this rank dies.

    torchrun starts each rank in a session of its own, so a signal to the
    launcher's process group never reaches it; without this a SIGKILLed
    launcher would leave ranks holding the port and the GPUs. Linux only.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    expected = os.environ.get(LAUNCHER_PID_ENV)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return
    if os.getppid() != parent or (expected is not None and expected != str(parent)):
        os._exit(1)  # the launcher is gone already


def _store(world: int, timeout: timedelta) -> Store | None:
    """The rendezvous store, its keys under this attempt's prefix.

    torchrun's agent keeps one store across the restarts of the group; without
    a prefix of their own, the ranks of a restart would read the addresses the
    ranks before them left there and fail to connect. None: ``env://`` as usual.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world,
        is_master=False,
        timeout=timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return PrefixStore(f"corteza/attempt_{attempt}/", store)


def gather_json(value: Any, world: int, control: Any) -> list[Any]:
    """Every rank's ``value`` (JSON), by rank, on the ``control`` group; nothing unpickled."""
    data = json.dumps(value).encode()
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.int64), group=control)
    longest = max(int(size.item()) for size in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    parts = [torch.empty(longest, dtype=torch.uint8) for _ in range(world)]
    dist.all_gather(parts, padded, group=control)
    return [
        json.loads(part[: int(size.item())].numpy().tobytes())
        for part, size in zip(parts, sizes, strict=True)
    ]


def join(settings: Settings) -> DistributedGroup | None:
    """Join the group torchrun started; None when this is the only process.

    Raises :class:`DistributedSetupError` when this rank cannot have a device.
    """
    global _current
    world = world_size_from_env()
    if world <= 1:
        return None
    if _current is not None:
        return _current
    watch_parent()
    rank, local_rank = rank_from_env(), int(os.environ.get("LOCAL_RANK", "0"))
    device = rank_device(settings.device, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(seconds=settings.distributed_timeout_s)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend, timeout=timeout, world_size=world, rank=rank, store=_store(world, timeout)
    )
    control = dist.new_group(backend="gloo", timeout=timeout)
    here = f"{socket.gethostname()} {device}"
    if device.type == "cuda":
        here += f" ({device_name(device)})"
    gathered = gather_json([socket.gethostname(), here], world, control)
    nodes = int(os.environ.get("GROUP_WORLD_SIZE") or len({host for host, _ in gathered}))
    _current = DistributedGroup(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        backend=backend,
        device=device,
        timeout=timeout,
        heartbeat_s=settings.distributed_heartbeat_s,
        control=control,
        nodes=nodes,
        devices=[text for _, text in gathered],
    )
    logger.info("rank %d of %d joined the group (%s on %s)", rank, world, backend, device)
    return _current


def leave() -> None:
    """Destroy the process groups (after the last collective)."""
    global _current
    if _current is not None and dist.is_initialized():
        dist.destroy_process_group()
    _current = None
