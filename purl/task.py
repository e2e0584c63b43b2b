"""A *task* is one dataset + one model + one dense training run, shared by every method.

``build_task`` returns the data split, the dense model (trained once and cached
on disk under ``cache_dir/dense/``, keyed by data/model/pre-training/seed) and
its layer profiles, so ``purl prune``, ``purl train`` and every cell of
``purl compare`` start from the very same dense weights.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from purl.checkpoint import load_checkpoint, load_weights, save_checkpoint
from purl.config import ExperimentConfig
from purl.data import DataBundle, build_data
from purl.errors import CheckpointError, NumericalError
from purl.models import build_model
from purl.numerics import first_non_finite
from purl.pruning import (
    PRUNABLE_TYPES,
    LayerProfile,
    MaskState,
    PrunableLayer,
    find_prunable_layers,
    profile_model,
)
from purl.results import check_writable
from purl.runtime import seed_everything
from purl.training import Accuracy, evaluate, train


@dataclass
class Task:
    """Everything a pruning method needs, identical for every method of a comparison."""

    config: ExperimentConfig
    data: DataBundle
    model: nn.Module
    device: torch.device
    dense_path: Path
    dense_test: Accuracy
    profiles: dict[str, LayerProfile]
    pretrain_seconds: float = 0.0
    from_cache: bool = False
    #: results computed from the task that every env/search of it can reuse (e.g. envs.prior.choose_prior's)
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def prunable_layers(self, model: nn.Module | None = None) -> list[PrunableLayer]:
        """Prunable layers of ``model`` (default: the task's dense model), honouring include/exclude."""
        return find_prunable_layers(model or self.model, self.config.model.include, self.config.model.exclude)

    def channel_ignored_layers(self) -> list[str]:
        """Conv/Linear modules that ``model.include``/``model.exclude`` keep out of pruning: at channel
        granularity every channel group touching one of them stays whole (``ignored_layers`` of
        :func:`purl.pruning.channels.channel_graph`). Empty with the default (prune everything)."""
        cfg = self.config.model
        if not cfg.include and not cfg.exclude:
            return []
        prunable = {layer.name for layer in self.prunable_layers()}
        return [name for name, module in self.model.named_modules()
                if isinstance(module, PRUNABLE_TYPES) and name not in prunable]

    def example_input(self) -> torch.Tensor:
        """One zero sample of the task's input shape on its device: traces channel graphs and counts MACs."""
        return torch.zeros((1, *self.data.input_shape), device=self.device)

    def fresh_copy(self) -> tuple[nn.Module, MaskState]:
        """A deep copy of the dense model with its own MaskState, for one pruning run."""
        model = copy.deepcopy(self.model)
        return model, MaskState(model, self.prunable_layers(model))

    def loader(self, split: str, *, seed: int | None = None, train_batch: bool | None = None):
        """DataLoader over a split with the config's batch sizes (train batches for 'train')."""
        cfg = self.config.data
        use_train_batch = train_batch if train_batch is not None else split == "train"
        batch = cfg.batch_size if use_train_batch else cfg.eval_batch_size
        return self.data.loader(split, batch, seed=self.config.seed if seed is None else seed,
                                num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda")


def load_data(config: ExperimentConfig) -> DataBundle:
    """The config's dataset, split deterministically by ``config.seed``."""
    cfg = config.data
    return build_data(cfg.name, root=Path(cfg.root).expanduser(), download=cfg.download, seed=config.seed,
                      val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                      max_samples=cfg.max_samples, augment=cfg.augment)


def new_model(config: ExperimentConfig, data: DataBundle) -> nn.Module:
    """An untrained model shaped for ``data`` (input channels/size and class count)."""
    return build_model(config.model.name, input_shape=data.input_shape, num_classes=data.num_classes,
                       **config.model.kwargs)


def dense_checkpoint_path(config: ExperimentConfig) -> Path:
    """Where the cached dense model of this task lives."""
    safe_data, safe_model = (n.replace(":", "_").replace("/", "_") for n in (config.data.name, config.model.name))
    name = f"{safe_data}-{safe_model}-seed{config.seed}-{config.task_key()}.pt"
    return Path(config.cache_dir).expanduser() / "dense" / name


def task_identity(config: ExperimentConfig, device: torch.device | str) -> str:
    """What makes two configs the same built task: the task key, the cache folder, the data and model
    sections, and the device. The one key of every in-process task cache (the envs' and Ray workers')."""
    return json.dumps(
        {"task": config.task_key(), "cache_dir": config.cache_dir, "data": config.data.model_dump(mode="json"),
         "model": config.model.model_dump(mode="json"), "device": str(device)},
        sort_keys=True,
    )


def build_task(
    config: ExperimentConfig, device: torch.device, *, progress: bool = True, retrain: bool = False
) -> Task:
    """Load data, then load the cached dense model or pre-train and cache it."""
    data = load_data(config)
    seed_everything(config.seed)
    model = new_model(config, data)
    find_prunable_layers(model, config.model.include, config.model.exclude)  # fail early if nothing to prune
    path = dense_checkpoint_path(config)
    from_cache = path.is_file() and not retrain
    seconds = 0.0
    if from_cache:
        try:
            payload = load_checkpoint(path)
            load_weights(model, payload, path)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; this is the cached dense model: rebuild it with `purl pretrain "
                                  "--retrain` and the same --config and overrides") from None
        seconds = float(payload["meta"].get("pretrain_seconds", 0.0))
        model.to(device)
    else:
        bad = first_non_finite(model.state_dict().items())
        if bad is not None:  # before training: a NaN loss at step 1 would blame the learning rate
            raise NumericalError(f"the dense model '{config.model.name}' holds non-finite weights as built: tensor "
                                 f"{bad.describe()}; fix the model's initialisation (model.name, model.kwargs)")
        check_writable(path.parent, what="dense-model cache folder (cache_dir)")  # before training, not after
        model.to(device)
        loader = data.loader("train", config.data.batch_size, seed=config.seed,
                             num_workers=config.data.num_workers, pin_memory=device.type == "cuda")
        result = train(model, loader, config.pretrain, device=device, progress=progress, desc="pretrain")
        seconds = result.seconds
        bad = first_non_finite(model.state_dict().items())
        if bad is not None:
            raise NumericalError(f"pre-training of {config.model.name} on {config.data.name} diverged: tensor "
                                 f"{bad.describe()}; lower pretrain.lr (now {config.pretrain.lr}) or add "
                                 "pretrain.weight_decay")
    test_loader = data.loader("test", config.data.eval_batch_size, num_workers=config.data.num_workers)
    dense_test = evaluate(model, test_loader, device=device)
    if not from_cache:
        save_checkpoint(path, model, config=config.to_dict(),
                        meta={"pretrain_seconds": seconds, "test_top1": dense_test.top1, "test_top5": dense_test.top5})
    profiles = profile_model(model, data.input_shape)
    return Task(config, data, model, device, path, dense_test, profiles, seconds, from_cache)
