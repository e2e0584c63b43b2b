"""Global MP's selection picks its CPU thread count per call (one thread on a busy machine or for few keys),
restores torch's count afterwards, and its results never depend on the thread count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from purl.baselines import _select
from purl.baselines.global_mp import global_magnitude_prune
from purl.baselines.lamp import LAMP
from purl.pruning import MaskState, find_prunable_layers


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _big_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # above EXACT_CUTOFF and PARALLEL_MIN_NUMEL: the sampled, threaded path
    model = nn.Sequential(nn.Linear(1500, 1500, bias=False), nn.Linear(1500, 600, bias=False),
                          nn.Linear(600, 10, bias=False))
    assert sum(p.numel() for p in model.parameters()) >= _select.PARALLEL_MIN_NUMEL
    return model


def _spy_scan_threads(monkeypatch) -> list[int]:
    seen: list[int] = []
    scan = _select._Scanner.scan

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return scan(self, *args, **kwargs)

    monkeypatch.setattr(_select._Scanner, "scan", spy)
    return seen


def test_busy_machine_runs_selection_single_threaded_and_restores(monkeypatch, two_threads) -> None:
    monkeypatch.setattr(_select, "free_cpus", lambda: 1)  # another process occupies the spare core
    seen = _spy_scan_threads(monkeypatch)
    global_magnitude_prune(_big_model(), 0.9)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2


def test_quiet_machine_keeps_torch_threads_for_large_selections(monkeypatch, two_threads) -> None:
    monkeypatch.setattr(_select, "free_cpus", lambda: 2)
    seen = _spy_scan_threads(monkeypatch)
    global_magnitude_prune(_big_model(), 0.9)
    assert seen and set(seen) == {2}
    assert torch.get_num_threads() == 2


def test_small_selection_is_single_threaded(monkeypatch, two_threads) -> None:
    monkeypatch.setattr(_select, "free_cpus", lambda: 2)
    assert _select.choose_threads(_select.PARALLEL_MIN_NUMEL - 1) == 1
    assert _select.choose_threads(_select.PARALLEL_MIN_NUMEL) == 2
    monkeypatch.setattr(_select, "SELECT_THREADS", 3)
    assert _select.choose_threads(10) == 3


def test_cpu_threads_restores_on_error(monkeypatch, two_threads) -> None:
    monkeypatch.setattr(_select, "free_cpus", lambda: 1)
    with pytest.raises(RuntimeError), _select.cpu_threads(1 << 30) as n:
        assert n == 1 and torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_free_cpus_is_within_available() -> None:
    n = _select.free_cpus()
    assert 1 <= n <= _select._available_cpus()


@pytest.mark.parametrize("threads", [1, 2])
def test_results_identical_for_any_thread_count(monkeypatch, two_threads, threads) -> None:
    reference_model = _big_model(3)
    monkeypatch.setattr(_select, "SELECT_THREADS", 1)
    ref_masks = MaskState(reference_model)
    ref = global_magnitude_prune(reference_model, 0.93, masks=ref_masks)
    lamp_ref = LAMP().allocate(find_prunable_layers(_big_model(3)), 0.8)
    monkeypatch.setattr(_select, "SELECT_THREADS", threads)
    model = _big_model(3)
    masks = MaskState(model)
    got = global_magnitude_prune(model, 0.93, masks=masks)
    assert got.counts == ref.counts
    assert all(torch.equal(masks.masks[n], ref_masks.masks[n]) for n in masks.names)
    in_place = _big_model(3)
    global_magnitude_prune(in_place, 0.93)
    assert all(torch.equal(layer.weight != 0, masks.masks[layer.name] & (layer.weight != 0))
               and int((layer.weight != 0).sum()) == int(masks.masks[layer.name].sum())
               for layer in find_prunable_layers(in_place))
    assert LAMP().allocate(find_prunable_layers(_big_model(3)), 0.8) == lamp_ref
