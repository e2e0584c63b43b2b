"""Device selection, seeding and thread settings: the things every command does first."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


def global_rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's global random states (CUDA's too when it is in use), for
    :func:`set_global_rng_state`."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Put back :func:`global_rng_state`'s states."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block and put the global random states back afterwards (:func:`global_rng_state`): a seeded side
    computation (the env's terminal proxy) leaves the caller's random stream (the agent's) as it was."""
    state = global_rng_state()
    try:
        yield
    finally:
        set_global_rng_state(state)


def configure_threads(threads: int | None) -> None:
    """Set torch's intra-op CPU thread count when the config asks for one (None leaves torch's default)."""
    if threads is not None:
        torch.set_num_threads(threads)


_FORK_GUARD_INSTALLED = False


def _single_threaded_child() -> None:
    """``os.fork`` child hook: drop torch's intra-op threads to 1 before the child runs any op."""
    torch.set_num_threads(1)


def install_fork_guard() -> None:
    """Make torch usable in processes forked after the parent ran parallel torch ops (idempotent).

    A forked child inherits the parent's OpenMP bookkeeping but not its worker threads, so its first
    parallel op (a matmul, a ``kthvalue``) waits forever on threads that do not exist: this is why
    ``gymnasium.make_vec(..., vectorization_mode="async")`` (``multiprocessing``'s default ``fork``
    context on Linux) hung. The guard registers an ``os.register_at_fork`` child hook that sets torch
    to one intra-op thread, which never touches the stale pool; ``forkserver``/``spawn`` children
    (SB3's ``SubprocVecEnv``, Ray) start fresh and are not affected. One thread is what every env
    worker uses anyway (``agents.vec_env`` pins them to 1); raise it again in the child with
    ``torch.set_num_threads`` only if the torch build does not use OpenMP. Installed on ``import envs``.
    """
    global _FORK_GUARD_INSTALLED
    if _FORK_GUARD_INSTALLED or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(after_in_child=_single_threaded_child)
    _FORK_GUARD_INSTALLED = True
