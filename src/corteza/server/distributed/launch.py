"""``corteza serve --nproc-per-node N``: torch's own launcher runs N ranks of ``corteza serve``.

The command strips its launch options (:data:`LAUNCH_OPTIONS`), and hands
``torch.distributed.run`` (what the ``torchrun`` program runs) the rest:
``torchrun --nproc-per-node N ... -m corteza serve <the other options>``. So a
plain ``torchrun ... -m corteza serve ...`` is the same thing. One box without
``--master-port`` runs ``--standalone`` (a free rendezvous port); several boxes
use the static rendezvous at ``--master-addr:--master-port``, where the box of
``--node-rank 0`` holds rank 0, the server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from corteza.server.distributed.group import LAUNCHER_PID_ENV, DistributedGroup

logger = logging.getLogger(__name__)

LAUNCH_OPTIONS = (
    "--nproc-per-node",
    "--nnodes",
    "--node-rank",
    "--master-addr",
    "--master-port",
    "--max-restarts",
)
DEFAULT_MAX_RESTARTS = 3  # when more than one rank
DEFAULT_MASTER_PORT = 29500  # torchrun's own default


def without_launch_options(args: Sequence[str]) -> list[str]:
    """``args`` less the launch options and their values (``--opt v`` or ``--opt=v``).

    >>> without_launch_options(["--port", "0", "--nproc-per-node", "2", "--nnodes=1"])
    ['--port', '0']
    """
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCH_OPTIONS:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept


def torchrun_args(
    serve_args: Sequence[str],
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    max_restarts: int | None = None,
) -> list[str]:
    """The arguments of ``torch.distributed.run`` that run ``corteza serve serve_args``.

    >>> torchrun_args(["--port", "8000"], nproc_per_node=2)  # doctest: +NORMALIZE_WHITESPACE
    ['--nproc-per-node=2', '--nnodes=1', '--max-restarts=3', '--standalone',
     '-m', 'corteza', 'serve', '--port', '8000']
    """
    world = nproc_per_node * nnodes
    restarts = (
        max_restarts if max_restarts is not None else (DEFAULT_MAX_RESTARTS if world > 1 else 0)
    )
    args = [
        f"--nproc-per-node={nproc_per_node}",
        f"--nnodes={nnodes}",
        f"--max-restarts={restarts}",
    ]
    if nnodes == 1 and master_port is None:
        args.append("--standalone")
    else:
        port = DEFAULT_MASTER_PORT if master_port is None else master_port
        args += [
            f"--node-rank={node_rank}",
            f"--master-addr={master_addr}",
            f"--master-port={port}",
        ]
    return [*args, "-m", "corteza", "serve", *serve_args]


def launch(args: Sequence[str]) -> int:
    """Run torch's launcher with ``args`` in this process; its exit status.

    This process is the ranks' parent: they die with it (see
    :func:`~corteza.server.distributed.group.watch_parent`).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    logger.info("torchrun %s", " ".join(args))
    try:
        torchrun(list(args))
    except ChildFailedError as exc:
        logger.error("the ranks failed, restarts spent: %s", f"{exc!s:.500}")
        return 1
    except SignalException as exc:  # SIGTERM or Ctrl-C: torchrun stopped the ranks first
        logger.info("stopped by signal %d; the ranks have stopped", exc.sigval)
    return 0


def banner_lines(group: DistributedGroup) -> list[str]:
    """What the start banner adds under torch.distributed: the ranks and their devices."""
    lines = [
        f"ranks: {group.world_size} ({group.backend}, {group.nodes} node"
        f"{'' if group.nodes == 1 else 's'}), rank 0 serves"
    ]
    lines += [f"  rank {rank}: {device}" for rank, device in enumerate(group.devices)]
    return lines
