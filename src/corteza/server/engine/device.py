"""Choosing the torch device and describing it for the statistics."""

from __future__ import annotations

import platform

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def device_label(device: torch.device) -> str:
    """Short label in the seed's style: ``CPU``, ``GPU`` or ``MPS``."""
    return {"cuda": "GPU", "mps": "MPS"}.get(device.type, device.type.upper())


def device_name(device: torch.device) -> str:
    """Human name: the GPU's model, or the processor."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "CPU"


def gpu_memory_mb(device: torch.device) -> tuple[float, float]:
    """(allocated, reserved) MiB on a CUDA device; zeros elsewhere."""
    if device.type != "cuda":
        return 0.0, 0.0
    mib = 1024 * 1024
    return torch.cuda.memory_allocated(device) / mib, torch.cuda.memory_reserved(device) / mib
