"""Shared fixtures for PuRL's test suite (usable by every test file).

Fixtures
--------
``tmp_cache``        list of overrides (``cache_dir=<tmp>``) that keep dense-model caches out of ``~/.cache``.
``make_config``      ``make_config(*overrides, path=QUICK_CONFIG)`` -> validated ExperimentConfig on CPU with a
                     private tmp ``cache_dir``.
``quick_task_config`` session-scoped config of ``quick_task`` (its ``cache_dir`` is a session tmp folder).
``quick_task``       session-scoped :class:`purl.task.Task` of ``configs/quick.yaml`` (digits + MLP) pre-trained
                     for 3 epochs on CPU in a tmp cache. Shared: never modify ``quick_task.model`` in place, use
                     ``quick_task.fresh_copy()``.
``device``           parametrised over ``cpu`` and ``cuda`` (the latter skipped when CUDA is unavailable).
``tiny_cnn``         a small seeded CNN with BatchNorm, a depthwise conv, a 1x1 shortcut conv and a Linear head,
                     for 3x8x8 inputs and 4 classes.
``toy_loader``       a seeded DataLoader over 64 random 3x8x8 samples with 4 learnable classes (8 batches of 8).
``run_cli``          ``run_cli(*argv)`` -> ``CliResult(rc, out, err)``, running ``purl.cli.main.main`` in process.

Hypothesis runs without deadlines (CI machines are noisy); set ``HYPOTHESIS_PROFILE`` to pick another profile.
Torch uses one intra-op CPU thread (``PURL_TEST_THREADS`` to change): the tests' tensors are tiny, and on a busy
machine multi-threaded kernels of tiny ops run 10-20x slower than single-threaded ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from purl.config import ExperimentConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"
QUICK_CONFIG = CONFIGS_DIR / "quick.yaml"
CPU = torch.device("cpu")
HAS_CUDA = torch.cuda.is_available()

torch.set_num_threads(int(os.environ.get("PURL_TEST_THREADS", "1")))

settings.register_profile("purl", deadline=None)
settings.register_profile("purl-ci", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "purl"))


# ---------------------------------------------------------------------------- configs and tasks


@pytest.fixture
def tmp_cache(tmp_path: Path) -> list[str]:
    """Overrides that point ``cache_dir`` at a fresh temporary folder."""
    return [f"cache_dir={tmp_path / 'purl-cache'}"]


@pytest.fixture
def make_config(tmp_cache: list[str]) -> Callable[..., ExperimentConfig]:
    """Factory: ``make_config("prune.sparsity=0.5", path=...)`` -> config on CPU with a tmp cache_dir."""

    def make(*overrides: str, path: str | Path | None = QUICK_CONFIG) -> ExperimentConfig:
        return load_config(path, [*tmp_cache, "device=cpu", *overrides])

    return make


@pytest.fixture(scope="session")
def quick_task_config(tmp_path_factory: pytest.TempPathFactory) -> ExperimentConfig:
    """``configs/quick.yaml`` with 3 pre-training epochs, CPU, and a session-wide tmp cache; 3 fine-tuning
    epochs and one seed (the tests need speed, not the shipped evidence budget of 24 epochs x 3 seeds)."""
    cache = tmp_path_factory.mktemp("quick-task-cache")
    return load_config(QUICK_CONFIG, [f"cache_dir={cache}", "pretrain.epochs=3", "device=cpu", "finetune.epochs=3",
                                      "compare.seeds=[0]"])


@pytest.fixture(scope="session")
def quick_task(quick_task_config: ExperimentConfig):
    """The quick task (digits + MLP, 3 epochs), built once per session on CPU. Do not mutate its model."""
    from purl.task import build_task

    return build_task(quick_task_config, CPU, progress=False)



@pytest.fixture
def fast_agent_overrides(quick_task_config: ExperimentConfig) -> list[str]:
    """CLI overrides of a seconds-long ``purl train`` on the session's cached quick task: 12 PPO steps in
    6-step rollouts, 5 fine-tuning steps, no re-ranking."""
    return [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3", "env.val_samples=100",
            "finetune.max_steps=5", "agent.total_timesteps=12", "agent.hyperparams={n_steps: 6, batch_size: 6}",
            "agent.rerank_candidates=0", "device=cpu"]


def collapse_prone_model() -> nn.Module:
    """Three bias-free linears where Global MP at high sparsity empties the down-scaled ``tiny`` layer."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("big", nn.Linear(100, 100, bias=False))
    model.add_module("tiny", nn.Linear(10, 5, bias=False))
    model.add_module("out", nn.Linear(100, 10, bias=False))
    with torch.no_grad():
        model.tiny.weight.mul_(1e-4)
    return model


@pytest.fixture
def make_collapse_prone_model() -> Callable[[], nn.Module]:
    """A factory of :func:`collapse_prone_model` (a fresh, identical model per call)."""
    return collapse_prone_model

@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test (restored afterwards), whatever ``PURL_TEST_THREADS`` says."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- devices and models


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA"))])
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each available device in turn (CUDA cases are reported as skipped when there is no GPU)."""
    return torch.device(request.param)


class TinyCNN(nn.Module):
    """conv -> BN -> depthwise conv -> BN, plus a 1x1 shortcut conv, then a Linear head (3x8x8 -> 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.shortcut = nn.Conv2d(3, 8, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.dw(out)) + self.shortcut(x))
        return self.fc(self.pool(out).flatten(1))


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    """A freshly initialised TinyCNN (seed 0), in train mode, on CPU."""
    torch.manual_seed(0)
    return TinyCNN()


def toy_dataset(n: int = 64, seed: int = 0) -> TensorDataset:
    """``n`` random 3x8x8 inputs whose class (0..3) is encoded in the mean of channel 0, so it is learnable."""
    gen = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % 4
    inputs = torch.randn(n, 3, 8, 8, generator=gen)
    inputs[:, 0] += targets.view(-1, 1, 1).float()
    return TensorDataset(inputs, targets)


@pytest.fixture
def toy_loader() -> DataLoader:
    """8 shuffled batches of 8 toy samples, in an order fixed by a seeded generator."""
    return DataLoader(toy_dataset(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------- CLI


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``purl <argv...>`` in process and return its exit status and captured stdout/stderr."""
    from purl.cli.main import main

    def run(*argv: str | Path) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)

    return run
