"""The control plane: one small header from rank 0 before every operation, then its data.

A header is :data:`HEADER_LEN` int64 values broadcast from rank 0 on the gloo
control group: the operation (:class:`Op`) and its sizes. The other ranks
wait for the next header on that group, with its long timeout; rank 0 sends a
``HEARTBEAT`` header whenever it has sent nothing for ``heartbeat_s`` seconds,
so an idle server never lets a wait time out. After a header the operation's
tensors are broadcast on the data group (NCCL on CUDA), and every rank runs
the same steps in the same order.

Rank 0 sends from two threads (the training worker and the heartbeat), one
operation at a time under :attr:`Leader.lock`. An operation that fails in a
collective (a rank died, a wait timed out) leaves the group in an unknown
state: rank 0 then exits at once, with status 1, and torchrun restarts the
whole group; rank 0 resumes from the newest checkpoint and clients resume
by ``(run_id, seq)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from enum import IntEnum
from typing import Any

import torch
import torch.distributed as dist

from corteza.server.distributed.group import DistributedGroup

logger = logging.getLogger(__name__)

HEADER_LEN = 8
GROUP_FAILED_EXIT = 1


class Op(IntEnum):
    HEARTBEAT = 0
    TRAIN = 1  # fields: batch, steps per sample (0: 2-D inputs), width, epochs, targets
    FEEDBACK = 2  # fields: batch, steps per sample, width, target width
    LOAD = 3  # weights, optimizer state and counters follow
    STOP = 4


def send_header(group: DistributedGroup, op: Op, fields: Sequence[int] = ()) -> None:
    header = torch.zeros(HEADER_LEN, dtype=torch.int64)
    header[0] = int(op)
    header[1 : 1 + len(fields)] = torch.tensor(list(fields), dtype=torch.int64)
    dist.broadcast(header, src=0, group=group.control)


def receive_header(group: DistributedGroup) -> tuple[Op, list[int]]:
    """Wait (at most the group's timeout) for rank 0's next header."""
    header = torch.zeros(HEADER_LEN, dtype=torch.int64)
    dist.broadcast(header, src=0, group=group.control)
    values = header.tolist()
    return Op(values[0]), values[1:]


def broadcast_tensors(group: DistributedGroup, tensors: list[torch.Tensor | None]) -> None:
    """Rank 0's tensors into the others' (same shapes), on the data group."""
    for tensor in tensors:
        if tensor is not None:
            dist.broadcast(tensor, src=0)


def share_state(group: DistributedGroup, model: torch.nn.Module, extra: dict[str, Any]) -> Any:
    """Rank 0's weights into every rank's model; ``extra`` (optimizer state, counters) to all.

    Returns rank 0's ``extra`` (every rank gets the same). Boxes need no shared disk.
    Nothing is unpickled: ``extra`` travels as JSON and tensors (see :func:`broadcast_state`).
    """
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
    return broadcast_state(group, extra if group.leader else None)


def broadcast_state(group: DistributedGroup, value: Any) -> Any:
    """Rank 0's ``value`` (dicts with str or int keys, lists, tuples, tensors, JSON scalars)
    to every rank, on the control group: its outline as JSON, then its tensors (on the CPU).

    The other ranks pass None and get rank 0's value; no rank unpickles anything.
    """
    tensors: list[torch.Tensor] = []
    outline = json.dumps(_outline(value, tensors)).encode() if group.leader else b""
    received = json.loads(_broadcast_bytes(group, outline))
    if not group.leader:
        tensors = [
            torch.empty(shape, dtype=_DTYPES[dtype]) for dtype, shape in _tensor_specs(received)
        ]
    for tensor in tensors:
        if tensor.numel():
            dist.broadcast(tensor, src=0, group=group.control)
    return _rebuild(received, tensors)


_DTYPES = {
    str(t).removeprefix("torch."): t
    for t in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}


def _broadcast_bytes(group: DistributedGroup, data: bytes) -> bytes:
    size = torch.tensor([len(data)], dtype=torch.int64)
    dist.broadcast(size, src=0, group=group.control)
    buffer = torch.zeros(int(size.item()), dtype=torch.uint8)
    if group.leader:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    dist.broadcast(buffer, src=0, group=group.control)
    return bytes(buffer.numpy().tobytes())


def _outline(value: Any, tensors: list[torch.Tensor]) -> Any:
    """``value`` as JSON values, its tensors appended to ``tensors`` (on the CPU)."""
    if isinstance(value, torch.Tensor):
        tensors.append(value.detach().cpu().contiguous())
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise TypeError(f"cannot share a tensor of {value.dtype}")
        return {"tensor": [dtype, list(value.shape)]}
    if isinstance(value, dict):
        for key in value:
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"cannot share a dict key {key!r:.40}")
        return {"dict": [[k, _outline(v, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_outline(v, tensors) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot share a {type(value).__name__}")


def _tensor_specs(outline: Any) -> Iterator[tuple[str, list[int]]]:
    """The ``(dtype, shape)`` of each tensor in ``outline``, in :func:`_outline`'s order."""
    if isinstance(outline, dict):
        ((kind, content),) = outline.items()
        if kind == "tensor":
            yield content[0], content[1]
        elif kind == "dict":
            for _, item in content:
                yield from _tensor_specs(item)
        else:
            for item in content:
                yield from _tensor_specs(item)


def _rebuild(outline: Any, tensors: list[torch.Tensor]) -> Any:
    """The value :func:`_outline` described, its tensors taken from ``tensors`` in order."""
    position = iter(tensors)

    def build(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        ((kind, content),) = item.items()
        if kind == "tensor":
            return next(position)
        if kind == "dict":
            return {k: build(v) for k, v in content}
        built = [build(v) for v in content]
        return built if kind == "list" else tuple(built)

    return build(outline)


class Leader:
    """Rank 0's side: operations one at a time, and the heartbeat between them."""

    def __init__(self, group: DistributedGroup) -> None:
        self.group = group
        self.lock = threading.RLock()
        self.last_sent = time.monotonic()
        self.heartbeats = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the heartbeat (after the state was shared)."""
        self._thread = threading.Thread(target=self._beat, name="corteza-heartbeat", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def operation(
        self, op: Op, fields: Sequence[int] = (), expected: tuple[type[BaseException], ...] = ()
    ) -> Iterator[None]:
        """Send ``op``'s header, then run the body (its collectives) holding the lock.

        An exception of an ``expected`` kind is one every rank takes alike (a loss
        that diverged): it passes. Any other ends this rank, and so the group.
        """
        with self.lock:
            try:
                send_header(self.group, op, fields)
                yield
            except expected:
                raise
            except Exception as exc:
                self.fail(f"{op.name.lower()} failed: {exc!s:.300}")
            finally:
                self.last_sent = time.monotonic()

    def _beat(self) -> None:
        interval = self.group.heartbeat_s
        while not self._stopped.is_set():
            wait = self.last_sent + interval - time.monotonic()
            if wait > 0:
                self._stopped.wait(wait)
                continue
            with self.lock:
                if self._stopped.is_set() or time.monotonic() - self.last_sent < interval:
                    continue
                try:
                    send_header(self.group, Op.HEARTBEAT)
                except Exception as exc:
                    self.fail(f"the heartbeat failed: {exc!s:.300}")
                self.heartbeats += 1
                self.last_sent = time.monotonic()

    def stop(self) -> None:
        """Tell the other ranks to exit; quietly when they are gone already."""
        with self.lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            try:
                send_header(self.group, Op.STOP)
            except Exception as exc:
                logger.warning("the other ranks did not hear the stop: %s", f"{exc!s:.200}")

    def fail(self, reason: str) -> None:
        """A collective failed: exit now, so that torchrun restarts the whole group."""
        logger.critical(
            "rank 0: %s; the group is broken, this rank exits so that torchrun restarts it "
            "(clients resume from the newest checkpoint)",
            reason,
        )
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(GROUP_FAILED_EXIT)
