"""Channel pruning on every torchvision classification builder, at 50% of the FLOPs.

For each builder in ``torchvision.models.list_models(module=torchvision.models)``, at a small input size:
either the model is refused with one clear PruningError line, or

* channel Global MP lands the budget (at most 50% of the dense MACs, below it by at most one step),
* the slimmed model runs, and its measured MACs and parameters equal the plan's analytic ones,
* it equals its masked twin (what the channel agent scores), or the twin is refused with one line.

The default suite walks one builder per family (the smallest); the other builders are marked ``slow``
(minutes each on a 2-core CPU for the largest): ``python -m pytest -m slow tests/test_torchvision_walk.py``.
A new torchvision family fails here until it is classified below, so the walk never silently shrinks.
"""

from __future__ import annotations

import re

import pytest
import torch
import torchvision

from purl.baselines.channel import channel_tolerance, keep_for_ratio
from purl.errors import PruningError
from purl.pruning.channels import channel_graph, check_slimmable, mask_channels, measure_model, prune_channels
from tests.batchnorm import randomise_batchnorm

#: the smallest builder of each family: walked by the default suite
REPRESENTATIVES = {
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet",
    "inception_v3", "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf",
    "regnet_y_400mf", "resnet18", "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_0", "swin_t",
    "swin_v2_t", "vgg11", "vgg11_bn", "vit_b_16", "wide_resnet50_2",
}
#: families whose slimmed form cannot run or whose channel couplings Torch-Pruning cannot resolve: refused
REFUSED = {"vit": "cannot be slimmed", "swin": "window attention", "maxvit": "window attention",
           "shufflenet": "cannot trace"}  # ShuffleNet: its channel shuffle (view + transpose) breaks the tracer
#: families whose masked twin is not exact (LayerNorm inside a channel group): slimmed, twin refused
NO_TWIN = {"convnext": "LayerNorm"}


def family(name: str) -> str:
    return re.match(r"[a-z]+", name).group(0)


def builder_kwargs(name: str) -> tuple[dict, int]:
    """torchvision options and input side for a small, valid input."""
    if name.startswith("vit"):
        return {"image_size": 28 if "14" in name else 32}, 28 if "14" in name else 32
    if name == "inception_v3":
        return {"aux_logits": False, "init_weights": False}, 80
    if name == "googlenet":
        return {"aux_logits": False, "init_weights": False}, 32
    if name.startswith("maxvit"):
        return {"input_size": (224, 224)}, 224  # refused before tracing: the size only has to build
    return {}, 64 if name == "alexnet" else 32


NAMES = torchvision.models.list_models(module=torchvision.models)
PARAMS = [pytest.param(n, marks=() if n in REPRESENTATIVES else pytest.mark.slow) for n in NAMES]


def test_every_family_is_walked_by_default() -> None:
    assert {family(n) for n in NAMES} == {family(n) for n in REPRESENTATIVES}
    assert set(NAMES) >= REPRESENTATIVES


@pytest.mark.parametrize("name", PARAMS)
def test_channel_pruning_at_half_the_flops(name: str) -> None:
    torch.manual_seed(0)
    kwargs, side = builder_kwargs(name)
    model = randomise_batchnorm(torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs))
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    refusal = REFUSED.get(family(name))
    try:
        graph = channel_graph(model, x)
        keep = keep_for_ratio(graph, 0.5, method="global-mp")
        slim = prune_channels(model, x, keep, graph=graph).eval()
    except PruningError as exc:
        assert refusal is not None, f"{name} refused unexpectedly: {exc}"
        assert re.search(refusal, str(exc)) and "\n" not in str(exc)
        return
    assert refusal is None, f"{name} was expected to be refused ({refusal})"
    cost = measure_model(slim, x)
    assert cost.macs == graph.macs(keep) and cost.params == graph.params(keep)
    assert 0.5 * graph.dense_macs - channel_tolerance(graph) <= cost.macs <= 0.5 * graph.dense_macs
    with torch.no_grad():
        out = slim(x)
    assert torch.isfinite(out).all() and out.shape == (1, 10)
    no_twin = NO_TWIN.get(family(name))
    if no_twin is not None:
        with pytest.raises(PruningError, match=no_twin):
            check_slimmable(graph, masked_twin=True)
        return
    with torch.no_grad():
        twin = mask_channels(model, x, keep).eval()(x)
    torch.testing.assert_close(out, twin, rtol=1e-3, atol=1e-4 * max(float(twin.abs().max()), 1.0))
