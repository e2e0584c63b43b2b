"""The Method protocol and registry (purl.methods) and the one config merge (purl.config.merge_config)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from purl.config import MethodSpec, load_config, merge_config
from purl.errors import ConfigError
from purl.methods import METHODS, Method, get_method, method_name, validate_methods

ROOT = Path(__file__).resolve().parents[1]


def test_methods_are_registered_and_allocators_run_the_baseline_method() -> None:
    assert method_name("agent") == "agent" and method_name("global-mp") == "baseline"
    assert {"agent", "baseline"} <= set(METHODS.names())
    assert isinstance(get_method("agent"), Method) and isinstance(get_method("lamp"), Method)


def test_purl_core_imports_no_method_package() -> None:
    code = ("import sys, purl.methods, purl.compare, purl.compare.runner, purl.config; "
            "print(any(m in sys.modules for m in ('purl.agents', 'purl.baselines', 'purl.envs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_merge_config_orders_cli_then_method_then_cell() -> None:
    config = merge_config({"env": {"reward": "purl"}}, cli_overrides=["agent.algo=sac", "env.reward=amc"],
                          method_overrides={"agent.algo": "a2c", "env": {"reward_kwargs": {"w": 1}}},
                          target_sparsity=0.7, min_threshold=0.5)
    assert config.agent.algo == "a2c" and config.env.reward == "amc" and config.env.reward_kwargs == {"w": 1}
    assert config.env.target_sparsity == 0.7 and config.constraints.min_threshold == 0.5
    assert merge_config({}, method_overrides=["env.reward_kwargs={a: 1}"]).env.reward_kwargs == {"a": 1}


@pytest.mark.parametrize("overrides", [{"agent.hyperparams": {}}, {"agent": {"hyperparams": {}}}])
def test_an_empty_method_mapping_resets_it(overrides: dict) -> None:
    """``agent.hyperparams: {}`` after switching agent.algo resets the base's PPO keys, as on the command line."""
    base = {"agent": {"algo": "ppo", "hyperparams": {"n_steps": 100, "n_epochs": 5}}}
    assert merge_config(base, method_overrides=overrides).agent.hyperparams == {}
    merged = merge_config(base, method_overrides={"agent.hyperparams": {"n_steps": 50}}).agent.hyperparams
    assert merged == {"n_steps": 50, "n_epochs": 5}  # a non-empty mapping still merges


@pytest.mark.parametrize(("key", "why"), [("finetune.epochs", "fine-tuning is the grid's"),
                                          ("data.batch_size", "data split"), ("model.name", "dense model"),
                                          ("pretrain.lr", "pre-training"), ("seed", "seed")])
def test_a_method_override_of_a_grid_key_is_one_clear_error(key: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        merge_config({}, method_overrides={key: 1}, where="method 'x': ")
    assert f"override '{key}' is not allowed" in str(info.value) and str(info.value).startswith("method 'x'")
    base = load_config(None, [f"compare.methods=[{{label: a2, method: agent, kwargs: {{{key}: 1}}}}]"])
    with pytest.raises(ConfigError, match="method 'a2'"):
        validate_methods(base)


def test_compare_refuses_a_finetune_override_before_any_work(run_cli, tmp_cache: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("compare", "-q", "-o", out, *tmp_cache,
                     "compare.methods=[{label: a2, method: agent, kwargs: {finetune.epochs: 9}}, global-mp]")
    assert result.rc == 2 and "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "finetune.epochs" in lines[0] and "fine-tuning is the grid's" in lines[0]
    assert not out.exists()


def test_baseline_method_cell_config_and_validation() -> None:
    base = load_config(None)
    spec = MethodSpec(label="l", method="lamp", schedule="gradual", min_threshold=0.1)
    method = get_method("lamp")
    config = method.cell_config(base, spec, 0.8)
    assert (config.prune.method, config.prune.sparsity, config.prune.schedule) == ("lamp", 0.8, "gradual")
    assert config.constraints.min_threshold == 0.1
    with pytest.raises(ConfigError, match="allowed: agent, .*global-mp"):
        method.validate(base, MethodSpec(label="x", method="nope"))
