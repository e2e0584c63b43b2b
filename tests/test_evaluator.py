"""RewardEvaluator: the prefix-activation cache gives exactly the full forward pass's accuracies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from purl.evaluator import ForwardPlan, RewardEvaluator, has_batchnorm
from purl.models import build_model
from purl.pruning import MaskState, find_prunable_layers, magnitude_mask
from purl.training import recalibrate_batchnorm

CASES = [
    ("lenet-5", (1, 28, 28)),
    ("resnet-20", (1, 28, 28)),
    ("torchvision:mobilenet_v2", (3, 32, 32)),  # inplace ReLU6, inverted residual adds, depthwise convs
]


def _setup(name: str, shape: tuple[int, ...], n: int = 48):
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=10).eval()
    layers = find_prunable_layers(model)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, *shape, generator=gen)
    calibration = list(torch.randn(2 * 16, *shape, generator=gen).split(16))
    # a hard, learnable-ish target: the dense model's own predictions on noisy inputs, so accuracies vary
    with torch.no_grad():
        recalibrate_batchnorm(model, calibration)
        y = model(x + 1.0 * torch.randn(x.shape, generator=gen)).argmax(1)
    return model, layers, x, y, calibration


def _walk(model, layers, x, y, calibration, *, cached: bool, seed: int) -> list[float]:
    """Accuracies along two forward-order episodes with random per-layer sparsities."""
    masks = MaskState(model, layers)
    evaluator = RewardEvaluator(model, [layer.name for layer in layers], x, y, batch_size=20,
                                calibration=calibration, memoize=True, prefix_cache_mb=1024 if cached else 0)
    assert (evaluator.plan is not None) == cached, evaluator.plan_error
    rng = torch.Generator().manual_seed(seed)
    out = [evaluator.dense_accuracy()]
    for _episode in range(2):
        masks.restore()
        counts = [0] * len(layers)
        for i, layer in enumerate(layers):
            s = 0.5 + float(torch.rand((), generator=rng)) * 0.499
            counts[i] = round(s * layer.numel)
            masks.set_mask(layer.name, magnitude_mask(layer.weight, counts[i]))
            out.append(evaluator.accuracy(counts, next_layer=i + 1 if i + 1 < len(layers) else None))
    masks.restore()
    return out


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_prefix_cache_gives_identical_accuracies(name: str, shape: tuple[int, ...], one_thread) -> None:
    model, layers, x, y, calibration = _setup(name, shape)
    full = _walk(model, layers, x, y, calibration, cached=False, seed=3)
    cached = _walk(model, layers, x, y, calibration, cached=True, seed=3)
    assert cached == full
    assert len(set(full)) > 2  # the walk really moves the accuracy, so equality is informative


def test_prefix_cache_runs_less_than_the_full_network(one_thread) -> None:
    """On ResNet-20 the cached path starts every later evaluation past the first node."""
    model, layers, x, y, calibration = _setup("resnet-20", (1, 28, 28), n=8)
    evaluator = RewardEvaluator(model, [layer.name for layer in layers], x, y, batch_size=8,
                                calibration=calibration)
    plan = evaluator.plan
    assert plan is not None and has_batchnorm(model)
    masks = MaskState(model, layers)
    counts = [0] * len(layers)
    starts = []
    original = plan.run

    def spy(start, values, save_at=None):
        starts.append(start)
        return original(start, values, save_at)

    plan.run = spy  # type: ignore[method-assign]
    for i, layer in enumerate(layers):
        counts[i] = layer.numel // 2
        masks.set_mask(layer.name, magnitude_mask(layer.weight, counts[i]))
        evaluator.accuracy(counts, next_layer=i + 1 if i + 1 < len(layers) else None)
    per_eval = len(calibration) + 1
    eval_starts = starts[::per_eval]
    assert eval_starts[0] == 0 and eval_starts[-1] == plan.cut(len(layers) - 1)
    assert eval_starts == sorted(eval_starts)


def test_changed_prefix_is_not_reused(one_thread) -> None:
    """A cached prefix whose layers were pruned differently since is recomputed, not reused."""
    model, layers, x, y, calibration = _setup("lenet-5", (1, 28, 28))
    names = [layer.name for layer in layers]
    cached = RewardEvaluator(model, names, x, y, batch_size=20, calibration=calibration, memoize=False)
    masks = MaskState(model, layers)
    masks.set_mask(names[0], magnitude_mask(layers[0].weight, 100))
    cached.accuracy([100, 0, 0, 0], next_layer=1)
    masks.restore()
    masks.set_mask(names[0], magnitude_mask(layers[0].weight, 400))
    got = cached.accuracy([400, 0, 0, 0], next_layer=1)
    reference = RewardEvaluator(model, names, x, y, batch_size=20, calibration=calibration, prefix_cache_mb=0)
    assert got == reference.accuracy([400, 0, 0, 0])


def test_untraceable_model_falls_back_to_full_passes() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.fc(x)
            return -self.fc(x)

    model = Branchy().eval()
    x, y = torch.randn(6, 4), torch.zeros(6, dtype=torch.long)
    evaluator = RewardEvaluator(model, ["fc"], x, y, batch_size=4)
    assert evaluator.plan is None and "TraceError" in (evaluator.plan_error or "") or evaluator.plan_error
    assert 0.0 <= evaluator.accuracy([0]) <= 1.0


def test_plan_rejects_layers_outside_the_graph() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="not called"):
        ForwardPlan(model, ["0", "missing"])
