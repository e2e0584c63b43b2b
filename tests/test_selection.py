"""agents.selection: which allocation an agent reports (candidates, filters, re-ranking)."""

from __future__ import annotations

import pytest

from purl.agents.selection import choose, gather, short_finetune_score
from purl.config import load_config
from tests.conftest import QUICK_CONFIG


@pytest.fixture
def layers(quick_task) -> list[str]:
    return list(quick_task.profiles)


@pytest.fixture
def config(quick_task_config):
    def make(*overrides: str):
        return load_config(QUICK_CONFIG, [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3",
                                          "device=cpu", "env.target_sparsity=0.9", *overrides])
    return make


def episode(layers: list[str], ret: float, accuracy: float, *, reaches: bool = True, first: float = 0.9) -> dict:
    """An episode record whose allocation is distinct per (first, ret)."""
    sparsities = {name: 0.9 for name in layers}
    sparsities[layers[0]] = first + ret * 1e-6
    return {"return": ret, "accuracy": accuracy, "global_sparsity": 0.9 if reaches else 0.5,
            "reaches_target": reaches, "meets_target": reaches, "layer_sparsities": sparsities}


def test_the_most_accurate_candidate_at_the_target_wins(quick_task, config, layers) -> None:
    found = {"best-episode": episode(layers, -0.1, 0.8), "most-accurate-episode": episode(layers, -0.9, 0.9),
             "best-return-episode": episode(layers, 0.0, 0.7),
             "deterministic": episode(layers, 0.5, 0.99, reaches=False)}  # misses the target: never preferred
    chosen = choose(gather(found), quick_task, config("agent.rerank_candidates=0"), seed=0)
    assert chosen.source == "most-accurate-episode" and chosen.proxy is None


def test_ties_go_to_the_prior_then_in_order(quick_task, config, layers) -> None:
    found = {"prior": episode(layers, -0.5, 0.9), "best-episode": episode(layers, -0.1, 0.9)}
    # equal accuracy: return decides between search candidates...
    assert choose(gather({"best-episode": found["best-episode"], "deterministic": episode(layers, -0.2, 0.9)}),
                  quick_task, config("agent.rerank_candidates=0"), seed=0).source == "best-episode"
    # ...and with re-ranking an equal proxy score goes to the prior (identical allocations score equally)
    same = dict(found["prior"])
    chosen = choose(gather({"prior": found["prior"], "top-accurate": None, "deterministic": same}), quick_task,
                    config("agent.rerank_candidates=2", "agent.rerank_steps=3"), seed=0)
    assert chosen.source == "prior"


def test_duplicate_allocations_are_one_candidate_named_by_the_first_source(layers) -> None:
    ep = episode(layers, -0.1, 0.8)
    candidates = gather({"prior": ep, "best-episode": dict(ep)}, [dict(ep), episode(layers, -0.3, 0.7)])
    assert [c.source for c in candidates] == ["prior", "top-accurate-2"]


def test_a_near_collapsed_candidate_is_dropped_while_another_exists(quick_task, config, layers) -> None:
    collapsed = episode(layers, 0.0, 0.99)
    last = layers[-1]
    collapsed["layer_sparsities"][last] = 1.0 - 1.0 / quick_task.profiles[last].numel  # keeps 1 weight of many
    healthy = episode(layers, -0.5, 0.5)
    chosen = choose(gather({"most-accurate-episode": collapsed, "deterministic": healthy}), quick_task,
                    config("agent.rerank_candidates=0"), seed=0)
    assert chosen.source == "deterministic"
    only = choose(gather({"most-accurate-episode": collapsed}), quick_task, config("agent.rerank_candidates=0"), 0)
    assert only.source == "most-accurate-episode" and only.near_collapsed == [last]


def test_reranking_scores_the_shortlist_and_picks_the_best_proxy(quick_task, config, layers) -> None:
    found = {"prior": episode(layers, -0.5, 0.5, first=0.5), "best-episode": episode(layers, -0.1, 0.9, first=0.97),
             "deterministic": episode(layers, -0.2, 0.8, first=0.95)}
    chosen = choose(candidates := gather(found), quick_task,
                    config("agent.rerank_candidates=1", "agent.rerank_steps=5"), seed=0)
    scored = [c for c in candidates if c.proxy is not None]
    assert {c.source for c in scored} == {"best-episode", "prior"}  # top-1 by one-shot accuracy, plus the prior
    assert chosen.proxy == max(c.proxy for c in scored)


def test_short_finetune_score_is_deterministic_and_uses_the_reward_split(quick_task, layers) -> None:
    sparsities = {name: 0.95 for name in layers}
    first = short_finetune_score(quick_task, sparsities, steps=5, seed=1, val_samples=None)
    assert first == short_finetune_score(quick_task, sparsities, steps=5, seed=1, val_samples=None)
    assert 0.0 <= first <= 1.0


def test_confirmation_keeps_a_winner_that_stays_ahead_on_fresh_seeds(quick_task, config, layers) -> None:
    from purl.agents.selection import Candidate, confirm, confirmation_seed

    cfg = config("agent.rerank_steps=5", "agent.confirm_seeds=2", "agent.beat_prior_z=1.96")
    collapsed = {name: 0.999 for name in layers}  # keeps almost nothing: far behind on every seed
    healthy = {name: 0.5 for name in layers}
    prior = Candidate("prior", {"layer_sparsities": collapsed})
    searched = Candidate("best-episode", {"layer_sparsities": healthy})
    chosen = confirm(searched, prior, quick_task, cfg, seed=0)
    assert chosen is searched and chosen.confirmation["confirmed"] is True
    assert chosen.confirmation["candidate"] == "best-episode" and len(chosen.confirmation["scores"]) == 2
    assert all(mine > theirs for mine, theirs in chosen.confirmation["scores"])
    assert len({confirmation_seed(0, k) for k in range(2)} | {0}) == 3  # fresh seeds, not the re-ranking's


def test_confirmation_reports_the_prior_when_the_winner_is_not_ahead(quick_task, config, layers) -> None:
    from purl.agents.selection import Candidate, confirm

    cfg = config("agent.rerank_steps=5", "agent.confirm_seeds=3", "agent.beat_prior_z=0")
    same = {name: 0.9 for name in layers}
    prior, searched = Candidate("prior", {"layer_sparsities": same}), Candidate("top-accurate-1",
                                                                                {"layer_sparsities": dict(same)})
    chosen = confirm(searched, prior, quick_task, cfg, seed=0)
    # the same allocation scores identically on a seed: never ahead, so the first confirmation stops it
    assert chosen is prior and chosen.confirmation == {"candidate": "top-accurate-1", "scores": [[chosen.confirmation[
        "scores"][0][0]] * 2], "confirmed": False}


def test_choose_confirms_only_when_asked(quick_task, config, layers) -> None:
    found = {"prior": episode(layers, -0.5, 0.5, first=0.97), "best-episode": episode(layers, -0.1, 0.9, first=0.5)}
    off = choose(gather(found), quick_task, config("agent.rerank_candidates=1", "agent.rerank_steps=5",
                                                  "agent.confirm_seeds=0", "agent.beat_prior_z=0"), seed=0)
    on = choose(gather(found), quick_task, config("agent.rerank_candidates=1", "agent.rerank_steps=5",
                                                 "agent.confirm_seeds=1", "agent.beat_prior_z=0"), seed=0)
    assert off.source == "best-episode" and off.confirmation is None
    assert on.confirmation is not None and on.confirmation["candidate"] == "best-episode"
    assert on.source == ("best-episode" if on.confirmation["confirmed"] else "prior")
