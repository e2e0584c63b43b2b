"""Tests of the model zoo (purl.models): shapes, parameter counts, torchvision and user models, errors."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from purl.errors import ConfigError, PurlError, RegistryError
from purl.models import MODELS, build_model, list_models

SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}
# Small stand-ins for registered models too big for a fast CPU test; they are built once in test_wrn_28_8.
SMALL_KWARGS = {"wrn": {"depth": 10, "width": 2}}
BIG = {"wrn-28-8", "wrn-28-10"}


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """These tiny models run fastest on one thread; it also avoids oversubscription on busy CI machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", sorted(set(MODELS.names()) - BIG))
def test_registered_model_forward_backward(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=10, **SMALL_KWARGS.get(name, {}))
    assert model.training, "build_model must leave the model in train mode"
    x = torch.randn(4, *shape)
    out = model(x)
    assert out.shape == (4, 10)
    out.logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_big_models_are_registered() -> None:
    assert set(MODELS.names()) >= BIG


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("lenet-5", (1, 28, 28), 431_080),
        ("lenet-300-100", (1, 28, 28), 266_610),
        ("resnet-20", (3, 32, 32), 272_474),  # 269,722 with option-A shortcuts + 2,752 for two 1x1 conv+BN
        ("resnet-32", (3, 32, 32), 466_906),
        ("resnet-56", (3, 32, 32), 855_770),
        ("mlp", (1, 28, 28), 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10),
    ],
)
def test_parameter_counts(name: str, shape: tuple[int, int, int], expected: int) -> None:
    assert n_params(build_model(name, input_shape=shape, num_classes=10)) == expected


def test_lenet5_layout() -> None:
    model = build_model("lenet-5", input_shape=(1, 28, 28), num_classes=10)
    assert model.conv1.padding == (0, 0)
    assert model.fc1.in_features == 800 and model.fc1.out_features == 500
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert weights == 430_500
    small = build_model("lenet-5", input_shape=(1, 8, 8), num_classes=10)
    assert small.conv1.padding == (2, 2) and small.fc1.in_features == 50 * 2 * 2
    explicit = build_model("lenet-5", input_shape=(1, 28, 28), num_classes=10, padding=2)
    assert explicit.fc1.in_features == 50 * 7 * 7


def test_mlp_hidden_option() -> None:
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[5])
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 5), (5, 3)]
    assert (
        len(
            [
                m
                for m in build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[]).modules()
                if isinstance(m, nn.Linear)
            ]
        )
        == 1
    )
    with pytest.raises(ConfigError, match="hidden"):
        build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[0])


def test_resnet_has_option_b_shortcuts() -> None:
    model = build_model("resnet-20", input_shape=(3, 32, 32), num_classes=10)
    shortcuts = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert shortcuts == ["layer2.0.shortcut.0", "layer3.0.shortcut.0"]
    assert isinstance(model.layer2[0].shortcut[1], nn.BatchNorm2d)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 + 2  # 19 conv layers + fc = 20 weighted layers, plus 2 shortcut convs


def test_wrn_28_8_param_count() -> None:
    model = build_model("wrn-28-8", input_shape=(3, 32, 32), num_classes=10)
    assert n_params(model) == 23_354_842
    assert abs(n_params(model) - 23.35e6) / 23.35e6 < 0.01


def test_wrn_options() -> None:
    model = build_model("wrn", input_shape=(3, 32, 32), num_classes=10, depth=16, width=1, dropout=0.3)
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.3 for m in model.modules()) == 6
    with pytest.raises(ConfigError, match="depth"):
        build_model("wrn", input_shape=(3, 32, 32), num_classes=10, depth=27)
    with pytest.raises(ConfigError, match="dropout"):
        build_model("wrn", input_shape=(3, 32, 32), num_classes=10, depth=10, width=1, dropout=1.5)


@pytest.mark.parametrize("name", ["resnet18", "torchvision:resnet18", "ResNet18"])
def test_torchvision_by_name(name: str) -> None:
    model = build_model(name, input_shape=(3, 32, 32), num_classes=7)
    assert isinstance(model, torchvision.models.ResNet)
    assert model.fc.out_features == 7
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_torchvision_one_channel_input() -> None:
    model = build_model("mobilenet_v2", input_shape=(1, 28, 28), num_classes=10)
    first = model.features[0][0]
    assert isinstance(first, nn.Conv2d) and first.in_channels == 1 and first.stride == (2, 2)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_options_and_errors() -> None:
    model = build_model("mobilenet_v2", input_shape=(3, 32, 32), num_classes=4, width_mult=0.5)
    assert model.classifier[-1].out_features == 4
    with pytest.raises(ConfigError, match="bogus"):
        build_model("resnet18", input_shape=(3, 32, 32), num_classes=4, bogus=1)
    with pytest.raises(ConfigError, match="NOT_A_WEIGHT"):
        build_model("resnet18", input_shape=(3, 32, 32), num_classes=4, weights="NOT_A_WEIGHT")
    with pytest.raises(ConfigError, match="cannot process inputs"):  # ViT needs image_size == H
        build_model("vit_b_32", input_shape=(3, 32, 32), num_classes=4)
    with pytest.raises(RegistryError, match=r"unknown torchvision model 'nope'.*resnet18"):
        build_model("torchvision:nope", input_shape=(3, 32, 32), num_classes=4)


def test_torchvision_pretrained_from_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weights= loads from the torch hub cache (no download), then the head and first conv are adapted."""
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    reference = torchvision.models.mobilenet_v3_small()
    torch.save(reference.state_dict(), checkpoints / Path(weights.url).name)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    model = build_model("mobilenet_v3_small", input_shape=(1, 16, 16), num_classes=10, weights="DEFAULT")
    assert model.classifier[-1].out_features == 10
    torch.testing.assert_close(model.features[1].block[0][0].weight, reference.features[1].block[0][0].weight)
    grey = reference.features[0][0].weight.sum(dim=1, keepdim=True)  # RGB filters summed for 1 channel
    torch.testing.assert_close(model.features[0][0].weight, grey)

    same = build_model("mobilenet_v3_small", input_shape=(3, 16, 16), num_classes=1000, weights="DEFAULT")
    torch.testing.assert_close(same.classifier[-1].weight, reference.classifier[-1].weight)


def test_torchvision_pretrained_missing_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match=r"could not load pretrained weights.*checkpoints"):
        build_model("resnet18", input_shape=(3, 32, 32), num_classes=10, weights="DEFAULT")


USER_MODULE = """
from torch import nn


def make_tiny(input_shape, num_classes, hidden=4):
    c, h, w = input_shape
    return nn.Sequential(
        nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


def make_fixed(out=5):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(out))


def make_any(**kwargs):
    c, h, w = kwargs["input_shape"]
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, kwargs["num_classes"]))


class TinyNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.LazyLinear(num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def not_a_model():
    return 42


INSTANCE = nn.Linear(3, 3)
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = "purl_test_user_models"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_user_models(user_module: str) -> None:
    model = build_model(f"{user_module}:make_tiny", input_shape=(1, 8, 8), num_classes=3, hidden=6)
    assert model[1].out_features == 6 and model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    fixed = build_model(f"{user_module}:make_fixed", input_shape=(1, 8, 8), num_classes=5)
    assert fixed[1].in_features == 64  # lazy module materialised by the build-time check
    assert build_model(f"{user_module}:make_any", input_shape=(1, 8, 8), num_classes=2)[1].out_features == 2
    assert build_model(f"{user_module}:TinyNet", input_shape=(3, 4, 4), num_classes=2).fc.in_features == 48


def test_user_model_errors(user_module: str) -> None:
    with pytest.raises(ConfigError, match=r"'hiden'.*allowed: hidden"):
        build_model(f"{user_module}:make_tiny", input_shape=(1, 8, 8), num_classes=3, hiden=6)
    with pytest.raises(ConfigError, match="returned int"):
        build_model(f"{user_module}:not_a_model", input_shape=(1, 8, 8), num_classes=3)
    with pytest.raises(ConfigError, match="must name a callable"):
        build_model(f"{user_module}:INSTANCE", input_shape=(1, 8, 8), num_classes=3)
    with pytest.raises(ConfigError, match=r"logits of shape \(N, 3\), got \(2, 5\)"):
        build_model(f"{user_module}:make_fixed", input_shape=(1, 8, 8), num_classes=3)
    with pytest.raises(RegistryError, match="no attribute 'missing'"):
        build_model(f"{user_module}:missing", input_shape=(1, 8, 8), num_classes=3)
    with pytest.raises(RegistryError, match="cannot import module"):
        build_model("no_such_pkg_xyz.mod:f", input_shape=(1, 8, 8), num_classes=3)


def test_unknown_model_name_lists_allowed() -> None:
    with pytest.raises(RegistryError) as info:
        build_model("resnet-21", input_shape=(3, 32, 32), num_classes=10)
    message = str(info.value)
    assert "'resnet-21'" in message
    for allowed in ("mlp", "lenet-5", "lenet-300-100", "resnet-20", "resnet-56", "wrn-28-10", "torchvision:"):
        assert allowed in message
    assert "Did you mean" in message and "'resnet-20'" in message
    assert isinstance(info.value, PurlError)


def test_unknown_kwarg_lists_allowed() -> None:
    with pytest.raises(ConfigError, match=r"'widht' for model 'wrn'; allowed: depth, width, dropout"):
        build_model("wrn", input_shape=(3, 32, 32), num_classes=10, widht=2)
    with pytest.raises(ConfigError, match=r"'depth' for model 'resnet-20'; allowed: \(none\)"):
        build_model("resnet-20", input_shape=(3, 32, 32), num_classes=10, depth=20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (28, 28), "num_classes": 10}, "input_shape"),
        ({"input_shape": (1, 0, 28), "num_classes": 10}, "input_shape"),
        ({"input_shape": (1, 28, 28), "num_classes": 0}, "num_classes"),
        ({"input_shape": (1, 28, 28), "num_classes": 2.5}, "num_classes"),
    ],
)
def test_bad_shape_or_classes(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model("mlp", **kwargs)


def test_input_too_small_for_lenet5() -> None:
    with pytest.raises(ConfigError, match="lenet-5 cannot handle inputs"):
        build_model("lenet-5", input_shape=(1, 2, 2), num_classes=10)


def test_build_leaves_modes_and_bn_stats_untouched() -> None:
    model = build_model("resnet-20", input_shape=(1, 8, 8), num_classes=10)
    assert all(m.training for m in model.modules())
    assert int(model.bn1.num_batches_tracked) == 0
    torch.testing.assert_close(model.bn1.running_mean, torch.zeros(16))


def test_list_models() -> None:
    described = list_models()
    assert set(MODELS.names()) <= set(described)
    assert all(described[name] for name in MODELS.names())
    assert "torchvision" in described["torchvision:<name>"]
    assert "He et al. 2016" in described["resnet-20"]
