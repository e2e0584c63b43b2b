"""Device selection and seeding: the two things every command does first."""

from __future__ import annotations

import random

import numpy as np
import torch

from purl.errors import ConfigError


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda[:N]`` must exist, with a clear error otherwise."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{spec}' requested but CUDA is not available here; use --device cpu or auto")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device '{spec}' does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
        return torch.device(spec)
    raise ConfigError(f"unknown device '{spec}'; allowed: auto, cpu, cuda, cuda:N")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def configure_threads(threads: int | None) -> None:
    """Set torch's intra-op CPU thread count when the config asks for one (None leaves torch's default)."""
    if threads is not None:
        torch.set_num_threads(threads)
