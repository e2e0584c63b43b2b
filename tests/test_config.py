"""Experiment configs: shipped YAMLs validate, typed overrides, precise errors, and the dense-model task key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

from purl.config import (
    DataConfig,
    ExperimentConfig,
    PruneConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_override,
    save_config,
)
from purl.errors import ConfigError, PurlError, RegistryError

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
QUICK_CONFIG = CONFIGS_DIR / "quick.yaml"
SHIPPED = sorted(CONFIGS_DIR.glob("*.yaml"))


def test_configs_are_shipped():
    assert QUICK_CONFIG in SHIPPED and len(SHIPPED) >= 2


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_config_validates_and_round_trips(path: Path, tmp_path: Path):
    config = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert config.name == raw["name"]
    assert config.data.name == raw["data"]["name"] and config.model.name == raw["model"]["name"]
    save_config(config, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == config and again.task_key() == config.task_key()


def test_defaults_without_a_file():
    config = load_config(None)
    assert config == ExperimentConfig()
    assert config.finetune.epochs == 2 and config.finetune.lr == 0.01


# --------------------------------------------------------------------------------------- overrides


def test_overrides_are_typed_by_yaml():
    config = load_config(QUICK_CONFIG, [
        "prune.sparsity=0.95", "pretrain.epochs=7", "data.augment=false", "model.kwargs={hidden: [32, 16]}",
        "model.exclude=[fc3]", "constraints.min_threshold=0.05", "data.max_samples=null", "name=my run",
        "finetune.lr=1e-3", "seed=42",
    ])
    assert config.prune.sparsity == 0.95
    assert config.pretrain.epochs == 7 and isinstance(config.pretrain.epochs, int)
    assert config.data.augment is False
    assert config.model.kwargs == {"hidden": [32, 16]}
    assert config.model.exclude == ["fc3"]
    assert config.constraints.min_threshold == 0.05
    assert config.data.max_samples is None
    assert config.name == "my run"
    assert config.finetune.lr == pytest.approx(1e-3)
    assert config.seed == 42
    # Untouched keys keep the file's values.
    assert config.pretrain.lr == 0.05 and config.data.name == "digits"


def test_later_override_wins_and_nested_sections_are_created():
    raw = apply_overrides({}, ["prune.sparsity=0.5", "prune.sparsity=0.75", "model.kwargs.hidden=[8]"])
    assert raw == {"prune": {"sparsity": 0.75}, "model": {"kwargs": {"hidden": [8]}}}
    assert config_from_dict(raw).model.kwargs == {"hidden": [8]}


def test_overrides_do_not_modify_the_input():
    raw = {"prune": {"sparsity": 0.5}}
    apply_overrides(raw, ["prune.sparsity=0.9"])
    assert raw == {"prune": {"sparsity": 0.5}}


@given(value=st.one_of(st.integers(-10**6, 10**6), st.booleans(),
                       st.floats(allow_nan=False, allow_infinity=False, width=32)))
def test_parse_override_yaml_round_trip(value):
    path, parsed = parse_override(f"a.b.c={yaml.safe_dump(value).removesuffix(chr(10) + '...' + chr(10))}")
    assert path == ["a", "b", "c"] and parsed == value


@pytest.mark.parametrize("text", ["prune.sparsity", "=0.5", " =1"])
def test_malformed_override_raises(text):
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override(text)


def test_override_into_a_non_section_raises():
    with pytest.raises(ConfigError, match="'sparsity' is not a section"):
        load_config(QUICK_CONFIG, ["prune.sparsity.x=1"])


def test_invalid_yaml_value_raises():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("model.kwargs={unclosed: [1, 2}")


# ------------------------------------------------------------------------------------------ errors


def test_misspelt_key_names_the_key_and_lists_allowed_keys():
    with pytest.raises(ConfigError) as info:
        load_config(QUICK_CONFIG, ["prune.sparsty=0.5"])
    message = str(info.value)
    assert "prune.sparsty" in message
    for allowed in PruneConfig.model_fields:
        assert allowed in message
    assert "\n" not in message


def test_misspelt_top_level_key_in_a_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsed: 3\ndata:\n  name: digits\n  batchsize: 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "unknown key 'sed'" in message and "seed" in message and "pretrain" in message
    assert "unknown key 'data.batchsize'" in message
    for allowed in DataConfig.model_fields:
        assert allowed in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("pretrain.epochs=many", "pretrain.epochs"),
        ("pretrain.epochs=2.5", "pretrain.epochs"),
        ("data.augment=maybe", "data.augment"),
        ("model.include=fc1", "model.include"),
        ("pretrain.optimizer=rmsprop", "pretrain.optimizer"),
        ("data=digits", "data"),
        ("device=gpu", "device"),
    ],
)
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(QUICK_CONFIG, [override])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("prune.sparsity=1.5", "prune.sparsity"),
        ("prune.sparsity=-0.1", "prune.sparsity"),
        ("finetune.lr=-1", "finetune.lr"),
        ("finetune.lr=0", "finetune.lr"),
        ("pretrain.momentum=1.0", "pretrain.momentum"),
        ("data.val_fraction=0", "data.val_fraction"),
        ("data.batch_size=0", "data.batch_size"),
        ("env.target_sparsity=1.0", "env.target_sparsity"),
        ("compare.sparsities=[0.5, 1.2]", "compare.sparsities.1"),
    ],
)
def test_out_of_range_names_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(QUICK_CONFIG, [override])
    assert f"'{key}'" in str(info.value)
    assert override.split("=", 1)[1].split(",")[-1].strip(" ]") in str(info.value)  # shows the bad value


def test_cross_field_constraints():
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        load_config(QUICK_CONFIG, ["data.val_fraction=0.5", "data.test_fraction=0.5"])
    with pytest.raises(ConfigError, match="gradual_end must be greater"):
        load_config(QUICK_CONFIG, ["prune.gradual_start=0.8", "prune.gradual_end=0.5"])
    with pytest.raises(ConfigError, match="unique"):
        load_config(QUICK_CONFIG, ["compare.methods=[lamp, lamp]"])


def test_missing_or_malformed_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "empty.yaml").write_text("")  # an empty file is an error, not a silent run of the defaults
    with pytest.raises(ConfigError, match="is empty"):
        load_config(tmp_path / "empty.yaml")


def test_validation_on_assignment():
    config = load_config(QUICK_CONFIG)
    with pytest.raises(ValueError, match=r"target sparsity must be in \[0, 1\)"):
        config.prune.sparsity = 2.0


def test_config_errors_are_user_errors():
    assert issubclass(ConfigError, PurlError) and issubclass(RegistryError, PurlError)


@pytest.mark.parametrize(
    ("override", "names"),
    [("model.name=nosuchnet", ["nosuchnet", "mlp", "resnet-20"]), ("data.name=nosuchdata", ["nosuchdata", "digits"])],
)
def test_unknown_model_or_dataset_fails_when_the_task_is_built(make_config, override, names):
    from purl.task import build_task

    config = make_config(override)  # any string is a valid name in the config itself ...
    with pytest.raises(RegistryError) as info:  # ... it is resolved (and rejected) when the task is built
        build_task(config, torch.device("cpu"), progress=False)
    message = str(info.value)
    assert all(name in message for name in names) and "allowed" in message
    assert not Path(config.cache_dir).exists() or not any(Path(config.cache_dir).rglob("*.pt"))


# ---------------------------------------------------------------------------------------- task key

BASE = ["pretrain.epochs=3"]


def key(*overrides: str) -> str:
    return load_config(QUICK_CONFIG, [*BASE, *overrides]).task_key()


@pytest.mark.parametrize(
    "override",
    [
        "model.name=lenet-300-100", "model.kwargs={hidden: [64]}", "data.name=mnist5k", "data.max_samples=500",
        "data.val_fraction=0.2", "data.augment=false", "data.batch_size=32", "pretrain.epochs=4", "pretrain.lr=0.1",
        "pretrain.optimizer=adam", "pretrain.max_steps=10", "seed=1",
    ],
)
def test_task_key_changes_with_what_determines_the_dense_model(override):
    assert key(override) != key()


@pytest.mark.parametrize(
    "override",
    [
        "data.eval_batch_size=7", "data.num_workers=3", "data.root=/elsewhere", "data.download=true",
        "model.include=[fc1]", "model.exclude=[fc3]", "finetune.lr=0.5", "finetune.epochs=9", "prune.sparsity=0.5",
        "env.target_sparsity=0.5", "agent.total_timesteps=10", "compare.seeds=[0, 1]", "name=other", "device=cpu",
        "cache_dir=/tmp/elsewhere",
    ],
)
def test_task_key_ignores_what_does_not_change_the_dense_model(override):
    assert key(override) == key()


def test_task_key_is_stable_and_short():
    assert key() == key() and len(key()) == 12 and int(key(), 16) >= 0
