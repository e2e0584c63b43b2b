"""Typed, validated experiment configs: YAML files in ``configs/`` plus ``key.sub=value`` overrides.

Every section forbids unknown keys, so a misspelt key fails loudly. Validation
errors are turned into one :class:`~purl.errors.ConfigError` whose message names
the key and what is allowed (the CLI prints it without a traceback).

Accuracies in configs are fractions in [0, 1]; a target sparsity is the fraction of
``prune.budget_metric`` removed: ``params`` (the default; at ``prune.granularity: weight`` the prunable
weights, at ``channel`` all parameters) or ``flops`` (Conv/Linear MACs per sample).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from purl.errors import ConfigError

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
AUTO_BN_BATCHES = 4  # env.bn_recalibration_batches 'auto' on a model with BatchNorm
OpenFraction = Annotated[float, Field(gt=0.0, lt=1.0)]


def _check_target_sparsity(value: float) -> float:
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise ValueError("a target sparsity must be in [0, 1) (at 1.0 every weight is pruned and every layer "
                         "collapses)")
    return value


# The one rule for a target global sparsity (prune.sparsity, compare.sparsities, env.target_sparsity).
TargetSparsity = Annotated[float, AfterValidator(_check_target_sparsity)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]


def _check_seed(value: int) -> int:
    if value < 0:  # numpy's seeding refuses negative seeds (a traceback deep in the data split otherwise)
        raise ValueError("a seed must be a non-negative integer (0, 1, 2, ...)")
    return value


# The one rule for a seed (the config's seed, compare.seeds entries; the CLI's --seed/--seeds end up here too).
Seed = Annotated[int, AfterValidator(_check_seed)]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Which dataset, where it lives, and how it is split into train / reward-validation / test."""

    name: str = "digits"
    root: str = "~/.cache/purl/data"
    download: bool = False
    val_fraction: OpenFraction = 0.1
    test_fraction: OpenFraction = 0.2
    max_samples: PositiveInt | None = None
    augment: bool = True
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 512
    num_workers: NonNegativeInt = 0

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1 so that training data remains")
        return self


class ModelConfig(Section):
    """The network: a registered name, a torchvision name, or ``package.module:callable``."""

    name: str = "mlp"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    include: list[str] = Field(default_factory=list, description="prunable-layer name patterns to keep")
    exclude: list[str] = Field(default_factory=list, description="prunable-layer name patterns to skip")


class TrainConfig(Section):
    """Optimiser and schedule for dense pre-training or masked fine-tuning (SGD + cosine by default)."""

    epochs: NonNegativeInt = 10
    max_steps: PositiveInt | None = None
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: PositiveFloat = 0.1
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    nesterov: bool = True
    weight_decay: NonNegativeFloat = 5e-4
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    amp: bool = True
    channels_last: bool = False


class ConstraintsConfig(Section):
    """Constraints every allocator and the environment honour."""

    min_threshold: Annotated[float, Field(ge=0.0, le=100.0)] | None = Field(
        None, description="Minimum Threshold: percent of all prunable weights every layer keeps (0.05 = 0.05%)"
    )
    min_weights: NonNegativeInt | None = None
    keep_dense: list[str] = Field(default_factory=list)
    max_sparsity: Fraction = 1.0


class PruneConfig(Section):
    """One pruning run: method, target, granularity (weights or channels), one-shot or gradual."""

    method: str = Field(
        "global-mp", description="allocator; at granularity 'channel' its channel form (global-mp, uniform, erk, lamp)"
    )
    sparsity: TargetSparsity = Field(
        0.9, description="target: the fraction of the budget metric REMOVED (params at granularity 'weight': "
        "prunable weights zeroed; 0.5 with budget_metric flops = keep 50% of the dense MACs)"
    )
    granularity: Literal["weight", "channel"] = Field(
        "weight", description="'weight': unstructured masks (same shapes, not faster on dense kernels); "
        "'channel': whole output channels removed (Torch-Pruning groups), a physically smaller model"
    )
    channel_norm: Literal["l1", "l2", "bn"] = Field(
        "l1", description="channel granularity: channel importance, L1/L2 norm of its filters or |BN gamma|"
    )
    budget_metric: Literal["params", "flops"] = Field(
        "params", description="what sparsity (and compare.sparsities) removes a fraction of: 'params' (weight "
        "granularity: prunable weights; channel: all parameters) or 'flops' (Conv/Linear MACs; at weight "
        "granularity one-shot only)"
    )
    min_channels: PositiveInt = Field(
        1, description="channel granularity: the Minimum Threshold in channels every channel group keeps"
    )
    channel_multiple: PositiveInt = Field(
        1, description="channel granularity: a pruned group keeps a multiple of this many channels (8 or 16 suit "
        "vectorised CPU/GPU kernels: irregular counts run slower at the same FLOPs); 1 = any count"
    )
    measure_latency: bool = Field(
        True, description="purl prune at channel granularity: time the dense and the slimmed model on CPU "
        "(eager, batch 1 and 64, medians) and report the latency ratio; timing is noisy on a busy machine"
    )
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    gradual_frequency: PositiveInt = 10
    gradual_start: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    gradual_end: Annotated[float, Field(gt=0.0, le=1.0)] = 0.75
    method_kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _window(self) -> PruneConfig:
        if self.gradual_end <= self.gradual_start:
            raise ValueError("gradual_end must be greater than gradual_start")
        if self.budget_metric == "flops" and self.schedule != "oneshot":
            raise ValueError(f"schedule '{self.schedule}' with budget_metric 'flops' is not supported (a gradual "
                             "mask's FLOPs depend on weights that change during fine-tuning); use schedule oneshot")
        if self.granularity == "channel" and self.schedule != "oneshot":
            raise ValueError(f"schedule '{self.schedule}' is not supported at granularity 'channel'; use "
                             "schedule oneshot (channels are removed once, then the slimmed model is fine-tuned)")
        return self


class MethodSpec(Section):
    """A comparison entry: a label, the allocator or ``agent``, and its settings."""

    label: str
    method: str
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    min_threshold: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)


class EnvConfig(Section):
    """The pruning MDP: targets, action mode, reward design and per-step retraining."""

    target_sparsity: TargetSparsity = 0.9
    target_accuracy: Fraction | None = Field(
        None, description="accuracy target on the reward split; None = dense accuracy - accuracy_drop"
    )
    accuracy_drop: Fraction = 0.02
    action: Literal["prior-relative", "sparsity-continuous", "sparsity-discrete", "sigma"] = "sparsity-continuous"
    prior: str = Field(
        "global-mp", description="allocator whose allocation at the target the prior-relative action adjusts "
        "(global-mp, erk, lamp, uniform, ...; computed under the same constraints); 'auto' = the best of "
        "prior_candidates by the re-ranking proxy on the reward split (envs/prior.py)"
    )
    prior_min_threshold: Annotated[float, Field(ge=0.0, le=100.0)] | None = Field(
        None, description="Minimum Threshold the prior's allocator runs with (a 'global-mp+mt' prior); None = "
        "constraints.min_threshold. The env's own per-layer limits stay those of constraints"
    )
    prior_candidates: list[str | MethodSpec] = Field(
        default_factory=lambda: ["global-mp", MethodSpec(label="global-mp+mt", method="global-mp", min_threshold=0.05),
                                 "erk", "lamp", "uniform"],
        description="the allocators env.prior 'auto' chooses from (names or {label, method, min_threshold}); at "
        "prune.granularity channel, those with a channel version"
    )
    prior_scale: PositiveFloat = Field(
        2.0, description="prior-relative action: layer sparsity = sigmoid(logit(prior) + prior_scale * action)"
    )
    min_layer_weights: Literal["outputs"] | NonNegativeInt = Field(
        "outputs", description="floor on the weights every layer keeps under any action or budget path: "
        "'outputs' = one per output channel/feature (default), an integer = that many, 0 = none; "
        "the Minimum Threshold floor (constraints.min_threshold) applies on top"
    )
    min_sparsity: Fraction = 0.0
    max_sparsity: Fraction = Field(
        0.999, description="largest sparsity an action may set; the budget wall never forces a layer beyond it"
    )
    sparsity_grid: list[Fraction] = Field(
        default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98]
    )
    sigma_grid: list[NonNegativeFloat] = Field(default_factory=lambda: [1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2])
    budget: bool = True
    budget_metric: Literal["params", "flops"] | None = Field(
        None, description="what target_sparsity removes a fraction of, 'params' or 'flops' (Conv/Linear MACs); "
        "None = prune.budget_metric, which it must equal when set (one budget for the agent and the baselines)"
    )
    finetune_steps: NonNegativeInt = 0
    finetune_lr: PositiveFloat = 0.01
    terminal_proxy_steps: NonNegativeInt = Field(
        0, description="weight granularity: on an episode's last step, score the finished allocation by the "
        "short-fine-tune proxy (this many masked SGD steps from the dense weights, BatchNorm re-estimated, reward "
        "split; purl/proxy.py) instead of one-shot, so a terminal reward (amc) learns from a signal that ranks "
        "like the fine-tuned outcome (docs/RESULTS.md, search signals); 0 = one-shot (default)"
    )
    passes: PositiveInt = 1
    reward: str = "purl"
    reward_kwargs: dict[str, Any] = Field(default_factory=dict)
    val_samples: PositiveInt | None = None
    cache_evaluations: bool = True
    bn_recalibration_batches: Literal["auto"] | NonNegativeInt = Field(
        "auto", description="train batches to re-estimate BatchNorm statistics on before each reward evaluation; "
        f"'auto' = {AUTO_BN_BATCHES} when the model has BatchNorm layers, else 0; 0 = off. Without it a pruned "
        "BN network can score at chance until fine-tuned (docs/RESULTS.md)"
    )
    activation_cache_mb: NonNegativeFloat = Field(
        1024.0, description="memory for the reward split's activations in front of the next layer (prefix "
        "cache: each step runs only the rest of the network); 0 = full forward passes"
    )

    @model_validator(mode="after")
    def _ranges(self) -> EnvConfig:
        if self.min_sparsity > self.max_sparsity:
            raise ValueError("min_sparsity must be <= max_sparsity")
        if not self.sparsity_grid or not self.sigma_grid:
            raise ValueError("sparsity_grid and sigma_grid must not be empty")
        if self.action == "prior-relative" and self.passes != 1:
            raise ValueError("action 'prior-relative' adjusts one allocation in one pass; set passes: 1")
        labels = [spec.label for spec in self.prior_specs()]
        if self.prior == "auto" and not labels:
            raise ValueError("prior 'auto' needs at least one prior_candidates entry")
        if len(set(labels)) != len(labels):
            raise ValueError(f"prior_candidates labels must be unique, got {labels}")
        for spec in self.prior_specs():
            if spec.schedule != "oneshot" or spec.kwargs:
                raise ValueError(f"prior_candidates entry '{spec.label}': a prior is a one-shot allocation of a "
                                 "registered allocator with no options (label, method, min_threshold only)")
        return self

    def prior_specs(self) -> list[MethodSpec]:
        """``prior_candidates`` as MethodSpecs (a bare string is its own label)."""
        return [MethodSpec(label=m, method=m) if isinstance(m, str) else m for m in self.prior_candidates]


class AgentConfig(Section):
    """A Stable-Baselines3 agent: algorithm, budget, hyper-parameters and checkpointing."""

    algo: str = "ppo"
    policy: str = "MlpPolicy"
    total_timesteps: PositiveInt = 2000
    n_envs: PositiveInt = 1
    vec_env: Literal["dummy", "subproc"] = "dummy"
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    policy_kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint_every: PositiveInt = 1000
    progress_bar: bool = True
    rerank_candidates: NonNegativeInt = Field(
        4, description="re-rank this many of the search's most accurate allocations (plus the prior) by a "
        "short fine-tune on the reward split before reporting one; 0 = rank by one-shot reward-split accuracy"
    )
    rerank_steps: PositiveInt = Field(40, description="SGD steps of the re-ranking fine-tune (train split)")
    beat_prior_z: NonNegativeFloat = Field(
        1.96, description="a searched allocation replaces the prior only when its re-ranking score is ahead by "
        "more than this many paired standard errors on the same reward-split images (McNemar); else the prior is "
        "reported. 0 = the higher score wins"
    )
    confirm_seeds: NonNegativeInt = Field(
        1, description="a searched allocation that beats the prior on the re-ranking is fine-tuned again, beside the "
        "prior, with this many fresh seeds (data orders the search never used) and reported only when it is ahead "
        "by beat_prior_z on every one (the best of many proxy scores is biased upward); 0 = no confirmation"
    )
    warm_start: Literal["none", "previous-target"] = Field(
        "none", description="'previous-target': in a purl compare grid, an agent cell starts its search from the "
        "finished policy of the same method and seed at the previous target of compare.sparsities (the observation "
        "carries the target), for warm_start_fraction of total_timesteps; the first target, or one whose "
        "predecessor did not finish, searches from scratch (agents/warm_start.py)"
    )
    warm_start_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.5, description="a warm-started search takes this fraction of total_timesteps (at least one env step; "
        "rounded up to whole rollouts like any budget); 1 = the full budget"
    )


class CompareConfig(Section):
    """A head-to-head grid: methods x target sparsities x seeds on one task."""

    methods: list[str | MethodSpec] = Field(default_factory=lambda: ["agent", "global-mp", "uniform", "lamp"])
    sparsities: list[TargetSparsity] = Field(default_factory=lambda: [0.5, 0.75, 0.9])
    seeds: list[Seed] = Field(default_factory=lambda: [0])
    profile_sparsity: Fraction | None = None
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    max_retries: NonNegativeInt = 1
    measure_latency: bool = Field(
        False, description="at prune.granularity channel: time dense vs slimmed model on CPU (eager, batch 1, "
        "median) in every cell and add the latency_ratio column (slimmed / dense); off by default, timing is noisy"
    )
    cpus_per_task: PositiveFloat = 1.0
    gpus_per_task: NonNegativeFloat = 0.0
    seed_scope: Literal["finetune", "task"] = Field(
        "finetune", description="what a compare seed resamples. finetune: the fine-tuning data order and the agent "
        "(one data split and dense model, from the config's seed, for every cell); task: also the data split and "
        "the dense model (pre-trained once per seed and cached), so seed-to-seed spread includes the dense "
        "model's. Every method of a seed still shares one task, so differences stay paired"
    )
    reference: str | None = Field(
        None, description="the method label every other method is compared with, seed by seed, in summary.md "
        "(mean paired difference, 95% interval, wins/ties/losses); default: global-mp when in the grid, else the "
        "first method"
    )

    @field_validator("methods")
    @classmethod
    def _unique_labels(cls, methods: list[str | MethodSpec]) -> list[str | MethodSpec]:
        labels = [m if isinstance(m, str) else m.label for m in methods]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"method labels must be unique, repeated: {dupes}")
        return methods

    @model_validator(mode="after")
    def _known_reference(self) -> CompareConfig:
        labels = [spec.label for spec in self.method_specs()]
        if self.reference is not None and self.reference not in labels:
            raise ValueError(f"compare.reference {self.reference!r} is not a method label of the grid; "
                             f"allowed: {', '.join(labels)}")
        return self

    def method_specs(self) -> list[MethodSpec]:
        """Every method as a MethodSpec (a bare string is its own label)."""
        return [MethodSpec(label=m, method=m) if isinstance(m, str) else m for m in self.methods]

    def cell_task_config(self, config: ExperimentConfig, seed: int) -> ExperimentConfig:
        """The config whose split and dense model a cell of ``seed`` uses: ``config`` itself, or with
        ``seed: <seed>`` when ``seed_scope`` is ``task``."""
        return config.model_copy(update={"seed": seed}) if self.seed_scope == "task" else config

    def reference_label(self) -> str | None:
        """The label paired differences are taken against: ``reference``, else ``global-mp`` when in the grid,
        else the first method (None for an empty grid)."""
        labels = [spec.label for spec in self.method_specs()]
        if self.reference is not None:
            return self.reference
        return "global-mp" if "global-mp" in labels else (labels[0] if labels else None)


class ExperimentConfig(Section):
    """A whole experiment: one task (data + model + dense training) and what to do with it."""

    name: str = "experiment"
    seed: Seed = 0
    device: str = "auto"
    threads: PositiveInt | None = Field(
        None, description="torch CPU threads (None: torch's default); 1 is fastest for tiny models on a busy machine"
    )
    cache_dir: str = "~/.cache/purl"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: TrainConfig = Field(default_factory=TrainConfig)
    finetune: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=2, lr=0.01))
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling (e.g. the env kwargs in a ``SubprocVecEnv`` / spawned ``AsyncVectorEnv`` worker) also registers
        PuRL's Gymnasium ids there, so ``gymnasium.make("purl/Pruning-v0", config=cfg)`` works in a process that never
        imported ``purl.envs`` (:mod:`purl.gym_registration`; nothing of ``purl.envs`` is imported)."""
        super().__setstate__(state)
        from purl.gym_registration import register_gym_envs

        register_gym_envs()

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        ok = value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())
        if not ok:
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value

    @model_validator(mode="after")
    def _one_budget(self) -> ExperimentConfig:
        metric = self.env.budget_metric
        if metric is None:
            return self
        if metric != self.prune.budget_metric:
            raise ValueError(f"env.budget_metric '{metric}' differs from prune.budget_metric "
                             f"'{self.prune.budget_metric}'; the agent and the baselines share one budget, set "
                             f"prune.budget_metric={metric} (or leave env.budget_metric unset)")
        return self

    def budget_metric(self) -> str:
        """The budget metric every method of this config uses: ``env.budget_metric`` or ``prune.budget_metric``."""
        return self.env.budget_metric or self.prune.budget_metric

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (what is saved next to results and inside checkpoints)."""
        return self.model_dump(mode="json")

    def task_key(self) -> str:
        """Hash of everything that determines the dense model (data, model, pre-training, seed)."""
        task = {
            "data": self.data.model_dump(mode="json", exclude={"batch_size", "eval_batch_size", "num_workers",
                                                                "root", "download"}),
            "batch_size": self.data.batch_size,
            "model": self.model.model_dump(mode="json", exclude={"include", "exclude"}),
            "pretrain": self.pretrain.model_dump(mode="json"),
            "seed": self.seed,
        }
        blob = json.dumps(task, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# ----------------------------------------------------------------------------- loading


def _format_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """One readable line per problem: ``key.path: what is wrong (allowed: ...)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(root, err["loc"][:-1])
            lines.append(f"unknown key '{loc}'" + (f"; allowed: {', '.join(allowed)}" if allowed else ""))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
            lines.append(f"'{loc or '(top level)'}': {msg}{shown}")
    return "invalid config: " + "; ".join(lines)


def _allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model: Any = root
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            return []
    return sorted(model.model_fields)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and YAML-parsed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc.__class__.__name__})") from None
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.sub=value`` override set (creating sections as needed)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return out


# ----------------------------------------------------------------------------- where each key takes effect

# Sections a method may override per compare entry (``MethodSpec.kwargs`` of the agent, ``--grid`` of a sweep):
# they change how the method searches or prunes, never what it is measured on.
METHOD_SECTIONS: dict[str, str] = {
    "agent": "the agent's algorithm, budget and hyper-parameters",
    "env": "the agent's MDP: action, prior, reward, budget, per-step retraining (the target is the cell's)",
    "prune": "allocator settings (method kwargs, gradual schedule)",
    "constraints": "Minimum Threshold, keep-dense, per-layer caps",
}
# Sections (and top-level keys) that belong to the grid: the same for every method of a comparison. This is
# the fairness guarantee: same data split, dense model, fine-tuning budget and evaluation for every cell.
GRID_KEYS: dict[str, str] = {
    "data": "the data split and evaluation batches are the grid's (the same for every method)",
    "model": "the dense model is the grid's (every method prunes the same network)",
    "pretrain": "the dense model's pre-training is the grid's (every method prunes the same weights)",
    "finetune": "fine-tuning is the grid's (every method gets the same fine-tuning budget and evaluation)",
    "seed": "the config's seed fixes the data split and dense model; cell seeds are compare.seeds / --seeds",
    "compare": "the grid itself (methods, sparsities, seeds, executor)",
    "device": "one device per run (--device)",
    "threads": "one thread setting per run",
    "cache_dir": "one dense-model cache per run",
    "name": "one name per run",
}


def _deep_merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Deep-merge ``update`` (nested or dotted keys) into ``into`` (dicts merge, everything else replaces; an
    empty mapping replaces too: ``agent.hyperparams: {}`` resets them, as ``agent.hyperparams={}`` does on the
    command line, where merging it would change nothing)."""
    for key, value in update.items():
        if "." in key:
            head, _, rest = key.partition(".")
            _deep_merge(into, {head: {rest: value}})
        elif isinstance(value, dict) and value and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _override_roots(overrides: dict[str, Any] | list[str]) -> list[tuple[str, str]]:
    """(root section, key as written) of every method override."""
    keys = [text.partition("=")[0].strip() for text in overrides] if isinstance(overrides, list) else list(overrides)
    return [(key.split(".")[0], key) for key in keys]


def check_method_overrides(overrides: dict[str, Any] | list[str], where: str = "") -> None:
    """Refuse a method override of a grid key (one ConfigError naming the key and why)."""
    for root, key in _override_roots(overrides):
        if root in GRID_KEYS:
            raise ConfigError(f"{where}override '{key}' is not allowed: {GRID_KEYS[root]}; a method may override "
                              f"only {', '.join(f'{s}.*' for s in METHOD_SECTIONS)}")
        if root not in METHOD_SECTIONS:
            raise ConfigError(f"{where}unknown override key '{key}'; a method may override only "
                              f"{', '.join(f'{s}.*' for s in METHOD_SECTIONS)}")


def merge_config(
    base: ExperimentConfig | dict[str, Any],
    *,
    cli_overrides: list[str] | None = None,
    method_overrides: dict[str, Any] | list[str] | None = None,
    target_sparsity: float | None = None,
    min_threshold: float | None = None,
    where: str = "",
) -> ExperimentConfig:
    """The one place a config is assembled: base, then CLI overrides, then a method's, then the cell; validated once.

    ``base`` is a YAML mapping or a validated config. ``cli_overrides`` are ``key.sub=value`` strings
    (any key). ``method_overrides`` are a method's (:data:`METHOD_SECTIONS` only, else one ConfigError
    naming the key and why): ``KEY=VALUE`` strings (the value replaces, as on the command line) or a
    mapping with nested or dotted keys (deep-merged; an empty mapping resets). ``target_sparsity`` becomes
    ``env.target_sparsity`` and ``min_threshold`` ``constraints.min_threshold`` (a cell's). ``where`` prefixes
    error messages.
    """
    raw = base.to_dict() if isinstance(base, ExperimentConfig) else copy.deepcopy(base)
    raw = apply_overrides(raw, list(cli_overrides or []))
    if method_overrides:
        check_method_overrides(method_overrides, where)
        if isinstance(method_overrides, list):
            raw = apply_overrides(raw, method_overrides)
        else:
            _deep_merge(raw, dict(method_overrides))
    if target_sparsity is not None:
        raw.setdefault("env", {})["target_sparsity"] = float(target_sparsity)
    if min_threshold is not None:
        raw.setdefault("constraints", {})["min_threshold"] = min_threshold
    try:
        config = config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    return config


#: the deprecated channel-only allocator names (baselines.channel.DEPRECATED_ALIASES; kept in sync by a test): at
#: prune.granularity=channel the weight allocators' own names run their channel forms
CHANNEL_ALIASES: tuple[str, ...] = ("channel-global-mp", "channel-uniform")


def _flatten(raw: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(raw, dict) and raw:
        out: dict[str, Any] = {}
        for key, value in raw.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): raw}


# Keys that do not change a run's result: a checkpoint made with other values is still resumable.
IGNORED_KEYS = ("name", "device", "threads", "cache_dir", "compare", "agent.progress_bar", "data.root",
                "data.download", "data.num_workers", "data.eval_batch_size")
# ... except these ``compare`` keys, which change what every cell measures (not which cells run).
RESULT_COMPARE_KEYS = ("compare.seed_scope",)


def config_differences(saved: dict[str, Any], config: ExperimentConfig) -> list[str]:
    """Dotted keys whose values differ between a saved config dict and ``config`` (ignoring IGNORED_KEYS)."""
    def relevant(key: str) -> bool:
        return key in RESULT_COMPARE_KEYS or not any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)

    old, new = _flatten(saved), _flatten(config.to_dict())
    defaults = _flatten(ExperimentConfig().to_dict())

    def differs(key: str) -> bool:
        if key not in old and key in defaults and new.get(key) == defaults[key]:
            return False  # a key added to PuRL after the folder was written, at its default: same run
        return old.get(key) != new.get(key)

    return sorted(k for k in set(old) | set(new) if relevant(k) and differs(k))


def shipped_configs() -> dict[str, Path]:
    """Name -> file of every config shipped with PuRL (``configs/*.yaml``, installed as package data of
    ``purl.configs``), sorted by name."""
    from importlib.resources import files

    try:
        folder = files("purl.configs")
    except ModuleNotFoundError:  # a source tree used without `pip install -e .`: nothing shipped
        return {}
    found = {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}
    return dict(sorted(found.items()))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """The config file ``name_or_path`` names: an existing path wins; else a shipped config by name (``quick``,
    ``quick.yaml``) or by its path in the source tree (``configs/quick.yaml``), from any working directory;
    else one ConfigError listing the shipped names."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = shipped_configs()
    if not path.is_absolute() and path.parent in (Path("."), Path("configs")) and path.suffix in ("", ".yaml"):
        found = shipped.get(path.name.removesuffix(".yaml"))
        if found is not None and found.is_file():
            return found
    if path.exists():  # e.g. a folder: read_yaml says it is not a file
        return path
    names = ", ".join(shipped) or "(none installed)"
    raise ConfigError(f"config file '{name_or_path}' does not exist (not a path from '{Path.cwd()}', not a shipped "
                      f"config); shipped configs, usable by name from anywhere (e.g. --config quick): {names}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (a path, or a shipped config's name: :func:`resolve_config_path`), with clear errors
    for missing files and bad syntax."""
    path = resolve_config_path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' is not a file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file '{path}' cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    if data is None:  # empty, only comments, or `null`: running the built-in defaults would be a silent surprise
        raise ConfigError(f"config file '{path}' is empty (no sections, only comments or null); give at least "
                          "one section such as 'data:' or 'model:', or omit --config for the built-in defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must contain a mapping of sections, got {type(data).__name__}")
    return data


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a raw dict into an ExperimentConfig or raise one ConfigError naming the bad keys."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, ExperimentConfig)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load ``path`` (or the built-in defaults when None), apply overrides, validate."""
    return merge_config(read_yaml(path) if path is not None else {}, cli_overrides=overrides)


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (what a run actually used), atomically."""
    from purl.results import write_text

    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
