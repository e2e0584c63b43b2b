"""Which allocation a trained agent reports: candidates, filters, and a short-fine-tune re-ranking.

An agent is a search procedure; its result is the best allocation the search *found*, judged on the
reward-validation split only (never test data, so the comparison with the baselines stays fair).

Candidates (``policy_source`` names the one reported):

* ``prior``: the prior-relative action's zero policy, i.e. the prior allocation itself (only in the
  ``prior-relative`` mode). Always a candidate, so on the reward split the reported allocation is never
  worse than the prior it started from;
* ``best-episode``: the highest-return training episode that met the env's target (sparsity + accuracy);
* ``most-accurate-episode``: the training episode at the target sparsity with the best reward-split accuracy;
* ``best-return-episode``: the highest-return training episode at the target sparsity;
* ``top-accurate-<k>``: the next most accurate distinct allocations of the search (:data:`TOP_ACCURATE`);
* ``deterministic``: one greedy rollout of the final policy.

Rule: keep the candidates at the target sparsity (:func:`envs.target.episode_meets_target`); drop those
with a near-collapsed layer (fewer weights than outputs, :func:`purl.pruning.metrics.near_collapsed_layers`)
while another one exists; rank by one-shot reward-split accuracy, then return. With
``agent.rerank_candidates`` = K > 0, the K best distinct allocations plus the prior are each fine-tuned
for ``agent.rerank_steps`` SGD steps (train split, same seed and data order for all; masks kept),
their BatchNorm statistics re-estimated, and scored on the reward split (:mod:`purl.proxy`); the best score
wins, except that a searched allocation replaces the prior only when the proxy can tell them apart: it must
be ahead by more than ``agent.beat_prior_z`` paired standard errors on the same images
(:meth:`purl.proxy.ProxyScore.beats`, McNemar). Otherwise the prior is reported. A searched winner that
passes is then *confirmed*: it and the prior are fine-tuned again with ``agent.confirm_seeds`` fresh seeds (data
orders neither the search nor the re-ranking used, :func:`confirmation_seed`) and it is reported only when it is
ahead by the same margin on every one; else the prior is. The reason is the winner's curse: the best of a few
dozen proxy scores on one data order is biased upward (measured on ResNet-20 at 98%, searching on the 20-step
proxy: the reported searched allocation was 1.9 points below its prior after 8 epochs on one seed of six).
The one-shot score misranks allocations at high sparsity (measured at 95% on ResNet-20: one-shot
0.211 / 0.309 / 0.227 against 89.0 / 86.4 / 83.1 test top-1 after full fine-tuning;
a 40-step proxy ranked them correctly). Ties go to the earlier candidate in the order above, so the prior wins a tie.

At channel granularity (episodes with ``channel_keep``) nothing can collapse (every group keeps a channel),
and the re-ranking fine-tunes the physically slimmed model of each plan (:func:`_channel_plan_score`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from purl.config import ExperimentConfig
from purl.envs.target import episode_meets_target
from purl.proxy import ProxyScore, short_finetune
from purl.pruning import near_collapsed_layers
from purl.task import Task

ORDER = ("prior", "best-episode", "most-accurate-episode", "best-return-episode", "top-accurate", "deterministic")


@dataclass
class Candidate:
    """One allocation the agent could report, with where it came from and how it scored."""

    source: str
    episode: dict[str, Any]
    proxy: float | None = None
    score: ProxyScore | None = None
    near_collapsed: list[str] = field(default_factory=list)
    #: with ``agent.confirm_seeds``: the searched winner's confirmation against the prior, ``{"candidate": source,
    #: "scores": [[searched top-1, prior top-1], ...], "confirmed": bool}`` (set on the candidate reported)
    confirmation: dict[str, Any] | None = None

    @property
    def sparsities(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.episode["layer_sparsities"].items()}


def gather(found: Mapping[str, dict[str, Any] | None], top_accurate: Sequence[dict[str, Any]] = ()) -> list[Candidate]:
    """Candidates in :data:`ORDER`, one per distinct allocation (the first source of an allocation names it)."""
    ordered: list[tuple[str, dict[str, Any] | None]] = []
    for name in ORDER:
        if name == "top-accurate":
            ordered.extend((f"top-accurate-{k + 1}", ep) for k, ep in enumerate(top_accurate))
        else:
            ordered.append((name, found.get(name)))
    out: list[Candidate] = []
    seen: set[tuple[tuple[str, float], ...]] = set()
    for name, episode in ordered:
        if episode is None:
            continue
        key = tuple(sorted((k, round(float(v), 12)) for k, v in episode["layer_sparsities"].items()))
        if key not in seen:
            seen.add(key)
            out.append(Candidate(name, episode))
    return out


def eligible(candidates: list[Candidate], task: Task, target_sparsity: float) -> list[Candidate]:
    """At the target sparsity; without a near-collapsed layer while any candidate has none."""
    numels = {name: p.numel for name, p in task.profiles.items()}
    at_target = [c for c in candidates if episode_meets_target(c.episode, target_sparsity)] or candidates
    if any("channel_keep" in c.episode for c in at_target):
        return at_target  # channel plans: every group keeps a channel, nothing can collapse
    for c in at_target:
        counts = {n: round(s * numels[n]) for n, s in c.sparsities.items()}
        c.near_collapsed = near_collapsed_layers(task.profiles, counts)
    healthy = [c for c in at_target if not c.near_collapsed]
    return healthy or at_target


def short_finetune_score(task: Task, sparsities: Mapping[str, float], *, steps: int, seed: int,
                         val_samples: int | None) -> float:
    """Reward-split top-1 of the allocation after the short-fine-tune proxy (:func:`purl.proxy.short_finetune`)."""
    return _allocation_score(task, sparsities, steps=steps, seed=seed, val_samples=val_samples).top1


def _allocation_score(task: Task, sparsities: Mapping[str, float], *, steps: int, seed: int,
                      val_samples: int | None) -> ProxyScore:
    from purl.agents.policy import apply_policy

    model, masks = apply_policy(task, sparsities)
    return short_finetune(task, model, masks, steps=steps, seed=seed, val_samples=val_samples)


def _channel_plan_score(task: Task, keep: Mapping[str, int], *, norm: str, steps: int, seed: int,
                        val_samples: int | None) -> ProxyScore:
    """The proxy for a channel keep plan: the physically slimmed model, fine-tuned ``steps`` SGD steps."""
    from purl.pruning.channels import prune_channels

    model = prune_channels(task.model, task.example_input(), dict(keep), norm=norm)
    return short_finetune(task, model, None, steps=steps, seed=seed, val_samples=val_samples)


def confirmation_seed(seed: int, index: int) -> int:
    """The ``index``-th fresh fine-tune seed of the confirmation: far from ``seed`` and from the env's own
    ``data_seed + 7919 * step`` seeds, so its data order is one the search and the re-ranking never used."""
    return seed + 1_000_003 * (index + 1)


def _score(candidate: Candidate, task: Task, config: ExperimentConfig, seed: int) -> ProxyScore:
    """The re-ranking proxy of one candidate (``agent.rerank_steps`` on the train split, fine-tune seed ``seed``)."""
    steps, val_samples = config.agent.rerank_steps, config.env.val_samples
    if "channel_keep" in candidate.episode:
        return _channel_plan_score(task, candidate.episode["channel_keep"], norm=config.prune.channel_norm,
                                   steps=steps, seed=seed, val_samples=val_samples)
    return _allocation_score(task, candidate.sparsities, steps=steps, seed=seed, val_samples=val_samples)


def confirm(best: Candidate, prior: Candidate, task: Task, config: ExperimentConfig, seed: int) -> Candidate:
    """``best`` if it stays ahead of ``prior`` (by ``agent.beat_prior_z``) on every fresh confirmation seed, else
    ``prior``; the outcome is recorded in the returned candidate's ``confirmation``."""
    scores: list[list[float]] = []
    confirmed = True
    for index in range(config.agent.confirm_seeds):
        fresh = confirmation_seed(seed, index)
        mine, theirs = _score(best, task, config, fresh), _score(prior, task, config, fresh)
        scores.append([mine.top1, theirs.top1])
        if not mine.beats(theirs, config.agent.beat_prior_z):
            confirmed = False
            break
    chosen = best if confirmed else prior
    chosen.confirmation = {"candidate": best.source, "scores": scores, "confirmed": confirmed}
    return chosen


def choose(candidates: list[Candidate], task: Task, config: ExperimentConfig, seed: int) -> Candidate:
    """The candidate to report (see the module docstring); ``proxy`` is filled in for re-ranked ones."""
    pool = eligible(candidates, task, config.env.target_sparsity)
    order = {c.source: i for i, c in enumerate(candidates)}
    ranked = sorted(pool, key=lambda c: (-float(c.episode["accuracy"]), -float(c.episode["return"]),
                                         order[c.source]))
    agent = config.agent
    if agent.rerank_candidates <= 0 or len(ranked) == 1:
        return ranked[0]
    shortlist = ranked[:agent.rerank_candidates] + [c for c in ranked[agent.rerank_candidates:] if c.source == "prior"]
    for c in shortlist:
        c.score = _score(c, task, config, seed)
        c.proxy = c.score.top1
    best = max(shortlist, key=lambda c: (c.proxy, -order[c.source]))
    prior = next((c for c in shortlist if c.source == "prior"), None)
    if prior is None or best is prior:
        return best
    if not best.score.beats(prior.score, agent.beat_prior_z):
        return prior  # the proxy cannot tell the searched allocation from the prior: report the prior
    return confirm(best, prior, task, config, seed) if agent.confirm_seeds else best
