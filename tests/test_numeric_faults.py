"""Numeric faults are refused with one line (issue #22): a dense model or checkpoint holding NaN/inf names the
tensor, a NaN/inf training loss stops pre-training or fine-tuning naming the likely cause (learning rate too
high, or bad data), and every allocator (Global MP's fast path included) refuses non-finite weights naming the
layer. Before, Global MP ranked NaN as the largest magnitudes and ``finetune.lr=inf`` exited 0."""

from __future__ import annotations

import math
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from cli_checks import one_line_error
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from purl.baselines import LayerCollapseWarning, get_allocator, list_allocators
from purl.baselines.global_mp import global_magnitude_prune
from purl.checkpoint import save_checkpoint
from purl.config import TrainConfig
from purl.errors import CheckpointError, NumericalError, PruningError, PurlError
from purl.pruning import MaskState, find_prunable_layers
from purl.task import build_task, dense_checkpoint_path, load_data, new_model
from purl.training import train

CPU = torch.device("cpu")
QUICK = "configs/quick.yaml"
FAST = ["pretrain.epochs=2", "finetune.epochs=1", "finetune.max_steps=3"]




# ------------------------------------------------------------------------------ (a) dense model / checkpoint


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_cached_dense_checkpoint_with_non_finite_weights_is_refused(make_config, bad: float) -> None:
    config = make_config()
    model = new_model(config, load_data(config))
    with torch.no_grad():
        model.fc2.weight[3, 1] = bad
    save_checkpoint(dense_checkpoint_path(config), model, config=config.to_dict())
    with pytest.raises(CheckpointError, match=r"'fc2\.weight'") as info:
        build_task(config, CPU, progress=False)
    assert "NaN or inf" in str(info.value) and "purl pretrain --retrain" in str(info.value)


def test_the_cli_names_the_tensor_of_a_damaged_dense_cache(run_cli, make_config, tmp_path: Path) -> None:
    config = make_config()
    model = new_model(config, load_data(config))
    with torch.no_grad():
        model.fc1.bias[0] = math.nan
    save_checkpoint(dense_checkpoint_path(config), model, config=config.to_dict())
    result = run_cli("prune", "--config", QUICK, "-q", "--device", "cpu", "-o", tmp_path / "out",
                     f"cache_dir={config.cache_dir}")
    one_line_error(result, "prune", "'fc1.bias'", "NaN or inf")


def test_a_built_dense_model_with_non_finite_weights_is_refused(make_config, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "nan_models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def broken(input_shape, num_classes, **kwargs):
            model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))
            with torch.no_grad():
                model[3].weight[0, 0] = float("inf")
            return model
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = make_config("model.name=nan_models:broken", "pretrain.epochs=0")
    with pytest.raises(NumericalError, match=r"'3\.weight'.*NaN or inf"):
        build_task(config, CPU, progress=False)


# ------------------------------------------------------------------------------ (b) training loss


def test_an_infinite_finetune_lr_stops_withone_line_error(run_cli, tmp_path: Path) -> None:
    result = run_cli("prune", "--config", QUICK, "-q", "--device", "cpu", "-o", tmp_path / "out",
                     f"cache_dir={tmp_path / 'cache'}", *FAST, "finetune.lr=inf")
    one_line_error(result, "prune", "finetune", "loss", "learning rate", "finetune.lr")
    assert not (tmp_path / "out" / "results.json").exists()


def test_an_infinite_pretrain_lr_stops_pre_training(make_config) -> None:
    config = make_config("pretrain.lr=inf", "pretrain.epochs=1")
    with pytest.raises(NumericalError, match=r"pretrain: .*loss.*pretrain\.lr"):
        build_task(config, CPU, progress=False)
    assert not dense_checkpoint_path(config).exists()  # nothing diverged is cached


def test_nan_inputs_stop_training_naming_the_data() -> None:
    inputs = torch.randn(32, 4)
    inputs[5, 2] = math.nan
    loader = DataLoader(TensorDataset(inputs, torch.arange(32) % 2), batch_size=8)
    model = nn.Linear(4, 2)
    with pytest.raises(NumericalError, match="data") as info:
        train(model, loader, TrainConfig(epochs=1, lr=0.01), device=CPU, progress=False, desc="finetune")
    assert "step 1 of 4" in str(info.value) and isinstance(info.value, PurlError)


def test_a_finite_run_is_unaffected() -> None:
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(32, 4), torch.arange(32) % 2), batch_size=8)
    result = train(nn.Linear(4, 2), loader, TrainConfig(epochs=2, lr=0.01), device=CPU, progress=False)
    assert result.steps == 8 and math.isfinite(result.final_loss)


# ------------------------------------------------------------------------------ (c) allocators


def _model_with(bad: float) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Linear(16, 16, bias=False), nn.Linear(16, 4, bias=False))
    with torch.no_grad():
        model[1].weight[2, 3] = bad
    return model


def _allocator(name: str, layers):
    if name == "layerwise":
        return get_allocator(name, sparsities={layer.name: 0.5 for layer in layers}, rescale=True)
    return get_allocator(name)


@pytest.mark.parametrize("bad", [math.nan, -math.inf])
@pytest.mark.parametrize("name", sorted(list_allocators()))
def test_every_allocator_refuses_non_finite_weights(name: str, bad: float) -> None:
    model = _model_with(bad)
    layers = find_prunable_layers(model)
    before = [layer.weight.detach().clone() for layer in layers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerCollapseWarning)
        with pytest.raises(PruningError, match=r"layer '1'.*non-finite") as info:
            _allocator(name, layers).prune_model(model, 0.5)
        assert len(str(info.value).splitlines()) == 1
        with pytest.raises(PruningError, match=r"layer '1'"):
            masks = MaskState(model, find_prunable_layers(model))
            _allocator(name, layers).prune(masks, 0.5)
    for layer, old in zip(layers, before, strict=True):  # nothing was zeroed
        assert torch.equal(layer.weight.detach().isnan(), old.isnan())
        assert torch.equal(torch.nan_to_num(layer.weight.detach()), torch.nan_to_num(old))


def test_global_magnitude_prune_refuses_non_finite_weights() -> None:
    with pytest.raises(PruningError, match=r"global-mp: layer '1' has 1 non-finite weight"):
        global_magnitude_prune(_model_with(math.inf), 0.9)
