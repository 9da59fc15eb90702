"""Choosing the compute device (the dtypes on it are `hairclip.precision`'s plan)."""

from __future__ import annotations

import torch


def pick_device(name: str | None = None) -> torch.device:
    """``auto`` (or None) prefers CUDA, then Apple MPS, then the CPU."""
    if name and name != "auto":
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available here")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"device {name!r} was asked for, but Apple MPS is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def prepare(device: torch.device) -> None:
    """Process-wide settings for fast inference. On x86 CPUs, subnormal floats take a slow microcode path
    (CLIP's text encoder ran ten times slower with them); flushing them to zero changes nothing visible."""
    if device.type == "cpu":
        torch.set_flush_denormal(True)
