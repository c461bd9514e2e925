"""``corteza serve --nproc-per-node N``: torch's own launcher runs N ranks of ``corteza serve``.

The command strips its launch options (:data:`LAUNCH_OPTIONS`), and hands
``torch.distributed.run`` (what the ``torchrun`` program runs) the rest:
``torchrun --nproc-per-node N ... -m corteza serve <the other options>``. So a
plain ``torchrun ... -m corteza serve ...`` is the same thing. One box without
``--master-port`` runs ``--standalone`` (a free rendezvous port); several boxes
use the static rendezvous at ``--master-addr:--master-port``, where the box of
``--node-rank 0`` holds rank 0, the server.

Neither the rendezvous nor the collectives authenticate anyone, and torchrun's
TCP store (here, in the launcher) listens on every interface whatever the
rendezvous address (torch 2.13 creates it with no address to bind): one box is
behind a firewall, several boxes share a private network (the README says so).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from corteza.server.distributed.group import LAUNCHER_PID_ENV, DistributedGroup
from corteza.server.launch.server import loopback
from corteza.server.launch.tunnel import make_tunnel
from corteza.server.settings import Settings

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
TUNNEL_URL_ENV = "CORTEZA_TUNNEL_URL"  # the launcher's tunnel, for rank 0's banner


def without_launch_options(args: Sequence[str], *also: str) -> list[str]:
    """``args`` less the launch options (and the options ``also`` names) and their values
    (``--opt v`` or ``--opt=v``).

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
        if name in LAUNCH_OPTIONS or name in also:
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


def rank_args(args: Sequence[str], port: int, tunnel_host: str | None) -> list[str]:
    """What every rank's ``corteza serve`` gets from the launcher's command line.

    The launcher holds the tunnel (one public URL across restarts of the group), so
    the ranks get none, and its host on their Host allow-list; and a fixed port
    (``--port 0`` is chosen once, here), so that a restarted rank 0 binds the port
    clients know.

    >>> rank_args(["--tunnel", "cloudflared", "--port", "0", "--nnodes=1"], 8123, "a.example")
    ['--port', '0', '--port', '8123', '--allowed-host', 'a.example']
    """
    kept = [*without_launch_options(args, "--tunnel"), "--port", str(port)]
    return kept if tunnel_host is None else [*kept, "--allowed-host", tunnel_host]


def run_launcher(
    args: Sequence[str],
    settings: Settings,
    tunnel_kind: str,
    *,
    nproc_per_node: int,
    **options: Any,
) -> int:
    """``corteza serve --nproc-per-node N``: the tunnel (if any), then torchrun; its status.

    ``args``: the command line as given; ``options``: :func:`torchrun_args`'s. Raises
    :class:`~corteza.server.launch.tunnel.TunnelError` when the tunnel cannot open.
    """
    port = settings.port
    if port == 0:
        with socket.socket() as probe:
            probe.bind((settings.host, 0))
            port = probe.getsockname()[1]
    tunnel = make_tunnel(tunnel_kind)
    public_url = None
    if tunnel is not None:
        tunnel.prepare()
        public_url = tunnel.start(f"http://{loopback(settings.host)}:{port}")
        os.environ[TUNNEL_URL_ENV] = public_url  # rank 0's banner names it
    try:
        tunnel_host = None if public_url is None else urlsplit(public_url).hostname
        ranks = rank_args(args, port, tunnel_host)
        return launch(torchrun_args(ranks, nproc_per_node=nproc_per_node, **options))
    finally:
        if tunnel is not None:
            tunnel.stop()


def banner_lines(group: DistributedGroup) -> list[str]:
    """What the start banner adds under torch.distributed: the ranks and their devices."""
    lines = [
        f"ranks: {group.world_size} ({group.backend}, {group.nodes} node"
        f"{'' if group.nodes == 1 else 's'}), rank 0 serves"
    ]
    lines += [f"  rank {rank}: {device}" for rank, device in enumerate(group.devices)]
    return lines
