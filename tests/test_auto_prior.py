"""``env.prior: auto``: the best baseline, by the re-ranking proxy on the reward split, becomes the agent's prior.

Also the paired rule that keeps the prior unless a searched allocation is ahead of it beyond noise
(:meth:`purl.proxy.ProxyScore.beats`).
"""

from __future__ import annotations

import pytest
import torch

from purl.agents.selection import choose, gather
from purl.config import load_config
from purl.envs import PruningEnv
from purl.envs.prior import choose_prior, prior_candidates
from purl.errors import ConfigError
from purl.proxy import ProxyScore
from tests.conftest import QUICK_CONFIG

FAST = ["agent.rerank_steps=5", "env.val_samples=200"]


@pytest.fixture
def config(quick_task_config):
    def make(*overrides: str):
        return load_config(QUICK_CONFIG, [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3",
                                          "device=cpu", "env.target_sparsity=0.9", *FAST, *overrides])
    return make


def test_auto_scores_every_candidate_and_picks_the_best(quick_task, config) -> None:
    cfg = config("env.prior=auto", "env.target_sparsity=0.95")
    choice = choose_prior(quick_task, cfg, seed=3)
    assert list(choice.scores) == ["global-mp", "global-mp+mt", "erk", "lamp", "uniform"]
    assert choice.scores[choice.label] == max(choice.scores.values())
    assert all(0.0 <= s <= 1.0 for s in choice.scores.values())
    assert choose_prior(quick_task, cfg, seed=3) is choice  # memoised on the task: the envs of a search pay once
    quick_task.memo.clear()
    again = choose_prior(quick_task, cfg, seed=3)
    assert again is not choice and again.scores == choice.scores  # and deterministic


def test_the_env_runs_the_chosen_prior_exactly_as_if_named(quick_task, config) -> None:
    auto = PruningEnv(config("env.prior=auto"), task=quick_task)
    choice = auto.prior_choice
    assert choice is not None and auto.config.env.prior == choice.method
    named = PruningEnv(config(f"env.prior={choice.method}", f"env.prior_min_threshold={choice.min_threshold}"
                              if choice.min_threshold is not None else "env.prior_min_threshold=null"),
                       task=quick_task)
    assert named.prior_choice is None and auto.prior == named.prior


def test_a_prior_with_a_minimum_threshold_keeps_the_mt_floor(quick_task, config) -> None:
    cfg = config("env.prior=auto", "env.target_sparsity=0.97",
                 'env.prior_candidates=[{label: gmp-mt, method: global-mp, min_threshold: 0.3}]')
    env = PruningEnv(cfg, task=quick_task)
    assert env.prior_choice.label == "gmp-mt" and env.config.env.prior_min_threshold == 0.3
    floor = 0.003 * sum(p.numel for p in quick_task.profiles.values())  # MT 0.3%: weights every layer keeps
    kept = [p.numel - c for p, c in zip(quick_task.profiles.values(), env.prior, strict=True)]
    assert min(kept) >= int(floor)
    plain = PruningEnv(config("env.prior=global-mp", "env.target_sparsity=0.97"), task=quick_task)
    assert min(p.numel - c for p, c in zip(quick_task.profiles.values(), plain.prior, strict=True)) < int(floor)
    # at 97% Global MP alone takes a layer below that floor


def test_a_named_prior_is_left_alone(quick_task, config) -> None:
    env = PruningEnv(config("env.prior=lamp"), task=quick_task)
    assert env.prior_choice is None and env.config.env.prior == "lamp"


def test_at_channel_granularity_auto_picks_among_the_channel_allocators(quick_task, config) -> None:
    cfg = config("prune.granularity=channel", "prune.budget_metric=flops", "env.prior=auto", "env.target_sparsity=0.5")
    assert [s.label for s in prior_candidates(cfg)] == ["global-mp", "erk", "lamp", "uniform"]
    env = PruningEnv(cfg, task=quick_task, granularity="channel")
    assert set(env.prior_choice.scores) == {"global-mp", "erk", "lamp", "uniform"}
    assert env.config.env.prior == env.prior_choice.label


@pytest.mark.parametrize(("overrides", "message"), [
    (["env.prior_candidates=[]"], "needs at least one prior_candidates entry"),
    (['env.prior_candidates=[erk, {label: erk, method: lamp}]'], "labels must be unique"),
    (['env.prior_candidates=[{label: g, method: global-mp, schedule: gradual}]'], "one-shot allocation"),
])
def test_bad_candidate_lists_are_one_config_error(config, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config("env.prior=auto", *overrides)


def test_a_candidate_that_cannot_reach_the_target_sits_out(quick_task, config) -> None:
    cfg = config("env.prior=auto", "env.target_sparsity=0.99",
                 'env.prior_candidates=[{label: big-mt, method: global-mp, min_threshold: 5}, lamp]')
    choice = choose_prior(quick_task, cfg, seed=0)
    assert choice.scores["big-mt"] is None and choice.label == "lamp"
    with pytest.raises(ConfigError, match="no candidate reaches target 0.99 .big-mt: "):
        choose_prior(quick_task, config("env.prior=auto", "env.target_sparsity=0.99",
                                        'env.prior_candidates=[{label: big-mt, method: global-mp, min_threshold: 5}]'),
                     seed=0)


def test_an_unknown_candidate_is_named(quick_task, config) -> None:
    with pytest.raises(ConfigError, match="candidate 'nope'"):
        choose_prior(quick_task, config("env.prior=auto", "env.prior_candidates=[global-mp, nope]"), seed=0)


def test_channel_auto_without_a_channel_candidate_is_refused(config) -> None:
    cfg = config("prune.granularity=channel", "prune.budget_metric=flops", "env.prior=auto",
                 "env.prior_candidates=[uniform-plus]")
    with pytest.raises(ConfigError, match="no env.prior_candidates entry has a channel version"):
        prior_candidates(cfg)


# ---------------------------------------------------------------------------- the paired rule


def _score(bits: str) -> ProxyScore:
    return ProxyScore(torch.tensor([b == "1" for b in bits]))


def test_beats_counts_only_the_discordant_images() -> None:
    a, b = _score("1" * 60 + "0" * 40), _score("0" * 40 + "1" * 60)  # same top-1, fully discordant
    assert a.top1 == b.top1 == 0.6 and not a.beats(b, 0.0) and not b.beats(a, 0.0)
    ahead = _score("1" * 70 + "0" * 30)
    base = _score("1" * 60 + "0" * 40)  # ahead right on 10 more images, wrong on none: b=10, c=0
    assert ahead.beats(base, 1.96) and ahead.beats(base, 3.0) and not ahead.beats(base, 3.2)
    assert not base.beats(ahead, 0.0)
    with pytest.raises(ValueError, match="same images"):
        ahead.beats(_score("1"), 0.0)


def _episode(layers: list[str], accuracy: float, first: float) -> dict:
    sparsities = {name: 0.9 for name in layers}
    sparsities[layers[0]] = first
    return {"return": 0.0, "accuracy": accuracy, "global_sparsity": 0.9, "meets_target": True,
            "layer_sparsities": sparsities}


def test_the_prior_stays_unless_a_searched_allocation_is_ahead_beyond_noise(quick_task, config) -> None:
    layers = list(quick_task.profiles)
    found = {"prior": _episode(layers, 0.5, 0.9), "best-episode": _episode(layers, 0.9, 0.5),
             "deterministic": _episode(layers, 0.8, 0.97)}
    plain = choose(candidates := gather(found), quick_task, config("agent.rerank_candidates=2", "agent.beat_prior_z=0",
                                                                      "agent.confirm_seeds=0"), seed=0)
    best = max((c for c in candidates if c.proxy is not None), key=lambda c: c.proxy)
    assert plain.proxy == best.proxy  # z = 0: the higher score wins
    strict = choose(gather(found), quick_task, config("agent.rerank_candidates=2", "agent.beat_prior_z=1000"), seed=0)
    assert strict.source == "prior"  # nothing is that far ahead of the prior: the prior is reported
