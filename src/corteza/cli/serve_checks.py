"""What ``corteza serve`` checks before it builds the model: each failure one line, exit 2.

Building the default model takes seconds and a port in use was only found after
it; a device torch does not know, a CUDA device on a machine without one, a
checkpoint folder that is a file: all are options the user can fix, so they are
refused at once with the option's name.
"""

from __future__ import annotations

import os
import socket

import torch

from corteza.server.datasets.folder_lock import data_folder_busy
from corteza.server.engine.precision import precision_refusal
from corteza.server.settings import Settings

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def startup_problem(settings: Settings, *, ranks: int = 1, serving: bool = True) -> str | None:
    """The first option of ``settings`` this machine cannot serve, in one line; or None.

    ``ranks``: processes on this box under torchrun, one device each; ``serving``
    False for a box that does not hold rank 0 (it binds no port).
    """
    return (
        _device(settings.device)
        or _ranks(settings.device, ranks)
        or precision_refusal(settings.device, settings.precision)  # bf16 on a T4, fp16 on MPS
        or _checkpoint_dir(settings)
        or (data_folder_busy(settings.data_root) if serving and settings.data_root_chosen else None)
        or (_port(settings) if serving else None)
    )


def _ranks(name: str, ranks: int) -> str | None:
    """Several ranks need one GPU each on CUDA; MPS has no collective backend."""
    if ranks == 1:
        return None
    if name.startswith("mps") or (name == "auto" and _mps_only()):
        return "--nproc-per-node: several ranks run on CUDA (NCCL) or the CPU (gloo), not MPS"
    if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()):
        count = torch.cuda.device_count()
        if ranks > count:
            return (
                f"--nproc-per-node {ranks}: each rank needs a GPU of its own and this machine "
                f"has {count}; pass at most {count}, or --device cpu"
            )
    return None


def _mps_only() -> bool:
    return not torch.cuda.is_available() and torch.backends.mps.is_available()


def _device(name: str) -> str | None:
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"--device {name}: not a device torch knows; use {DEVICES}"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"--device {name}: no CUDA GPU on this machine; use --device cpu or auto"
        if device.index is not None and device.index >= count:
            return (
                f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {name}: Apple's MPS is not available here; use --device cpu or auto"
    elif device.type not in ("cpu", "cuda", "mps"):
        return f"--device {name}: corteza serves on {DEVICES}"
    return None


def _checkpoint_dir(settings: Settings) -> str | None:
    folder = settings.checkpoint_dir
    if folder is None:
        return None
    if folder.exists() and not folder.is_dir():
        return f"--checkpoint-dir {folder} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--checkpoint-dir {folder}: cannot create it ({exc.strerror})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--checkpoint-dir {folder} is not writable"
    return None


def _port(settings: Settings) -> str | None:
    """Bind the port for a moment, as uvicorn will: in use means refused now, not later."""
    if settings.port == 0:
        return None
    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"--host {settings.host}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            return (
                f"--port {settings.port}: {settings.host}:{settings.port} is taken "
                f"({exc.strerror}); stop what listens there or pass another --port"
            )
    return None
