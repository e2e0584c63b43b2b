"""Prunable-layer discovery: which weight tensors are prunable, include/exclude patterns, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from purl.errors import PruningError, PurlError
from purl.pruning import PRUNABLE_TYPES, find_prunable_layers


class Zoo(nn.Module):
    """Every prunable type plus things that must never be pruned (biases, BatchNorm, LayerNorm, Embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem1d = nn.Conv1d(2, 4, 3)
        self.stem3d = nn.Conv3d(1, 2, 3)
        self.emb = nn.Embedding(10, 4)
        self.layer1 = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise
            nn.BatchNorm2d(8),
        )
        self.layer1_shortcut = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8))  # 1x1 shortcut
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)


EXPECTED = ["stem1d", "stem3d", "layer1.0", "layer1.2", "layer1_shortcut.0", "head"]


def test_finds_conv1d_2d_3d_linear_weights_in_definition_order():
    model = Zoo()
    layers = find_prunable_layers(model)
    assert [layer.name for layer in layers] == EXPECTED
    assert [layer.kind for layer in layers] == ["conv1d", "conv3d", "conv2d", "conv2d", "conv2d", "linear"]
    modules = dict(model.named_modules())
    for layer in layers:
        assert layer.weight is modules[layer.name].weight
        assert layer.numel == modules[layer.name].weight.numel()


def test_depthwise_and_shortcut_convs_are_included():
    model = Zoo()
    by_name = {layer.name: layer for layer in find_prunable_layers(model)}
    assert by_name["layer1.2"].module.groups == 8
    assert by_name["layer1.2"].weight.shape == (8, 1, 3, 3)
    assert by_name["layer1_shortcut.0"].weight.shape == (8, 3, 1, 1)


def test_biases_and_normalisation_parameters_are_never_prunable():
    model = Zoo()
    prunable = {id(layer.weight) for layer in find_prunable_layers(model)}
    never = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d | nn.LayerNorm | nn.Embedding)
             for p in m.parameters()]
    never += [m.bias for m in model.modules() if getattr(m, "bias", None) is not None]
    assert never, "the zoo must contain biases and norm parameters"
    assert not prunable & {id(p) for p in never}
    # Exactly the weights of conv/linear modules and nothing else.
    expected = {id(m.weight) for m in model.modules() if isinstance(m, PRUNABLE_TYPES)}
    assert prunable == expected


def test_real_models_every_conv_and_linear_found():
    from torchvision.models import mobilenet_v2

    from purl.models import build_model

    resnet = build_model("resnet-20", input_shape=(3, 32, 32), num_classes=10)
    mobilenet = mobilenet_v2(num_classes=10)
    for model in (resnet, mobilenet):
        expected = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert [layer.name for layer in find_prunable_layers(model)] == expected
    # ResNet's option-B 1x1 shortcut convs and MobileNet's depthwise convs are among them.
    assert any(layer.name.endswith("shortcut.0") and layer.weight.shape[2:] == (1, 1)
               for layer in find_prunable_layers(resnet))
    depthwise = [layer for layer in find_prunable_layers(mobilenet) if getattr(layer.module, "groups", 1) > 1]
    assert depthwise and all(layer.module.groups == layer.module.in_channels for layer in depthwise)


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (["layer1.*"], [], ["layer1.0", "layer1.2"]),
        (["layer1*"], [], ["layer1.0", "layer1.2", "layer1_shortcut.0"]),
        ([], ["*shortcut*"], ["stem1d", "stem3d", "layer1.0", "layer1.2", "head"]),
        ([], ["head", "stem*"], ["layer1.0", "layer1.2", "layer1_shortcut.0"]),
        (["layer1*", "head"], ["*.2"], ["layer1.0", "layer1_shortcut.0", "head"]),
        (["HEAD"], [], None),  # patterns are case-sensitive
    ],
)
def test_include_exclude_patterns(include, exclude, expected):
    if expected is None:
        with pytest.raises(PruningError):
            find_prunable_layers(Zoo(), include, exclude)
        return
    assert [layer.name for layer in find_prunable_layers(Zoo(), include, exclude)] == expected


def test_shared_module_is_listed_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential()
    model.add_module("a", shared)
    model.add_module("relu", nn.ReLU())
    model.add_module("b", shared)
    model.add_module("out", nn.Linear(4, 2))
    layers = find_prunable_layers(model)
    assert [layer.name for layer in layers] == ["a", "out"]
    assert sum(layer.numel for layer in layers) == 16 + 8


def test_shared_module_is_known_by_its_first_name():
    shared = nn.Linear(4, 4)
    model = nn.Module()
    model.first = shared
    model.second = shared
    model.out = nn.Linear(4, 2)
    assert [layer.name for layer in find_prunable_layers(model)] == ["first", "out"]
    assert [layer.name for layer in find_prunable_layers(model, exclude=["first"])] == ["out"]


def test_nothing_prunable_raises_clear_error_naming_allowed_types():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU(), nn.LayerNorm(4), nn.Embedding(3, 4))
    with pytest.raises(PruningError) as info:
        find_prunable_layers(model)
    message = str(info.value)
    for name in ("Conv1d", "Conv2d", "Conv3d", "Linear"):
        assert name in message
    assert "Sequential" in message
    assert isinstance(info.value, PurlError)


def test_everything_excluded_raises_error_mentioning_the_patterns():
    with pytest.raises(PruningError, match=r"exclude=\['\*'\]"):
        find_prunable_layers(Zoo(), exclude=["*"])
    with pytest.raises(PruningError, match="include=\\['nope'\\]"):
        find_prunable_layers(Zoo(), include=["nope"])


def test_discovery_does_not_modify_the_model():
    model = Zoo()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    find_prunable_layers(model, include=["layer1*"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
