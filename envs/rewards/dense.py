"""PuRL's dense per-step reward (Gupta et al. 2020)."""

from __future__ import annotations

from purl.envs.rewards.base import Reward, RewardContext
from purl.envs.rewards.registry import REWARDS


@REWARDS.register("purl")
class PurlReward(Reward):
    """PuRL's dense reward every step: w_acc*min(A_t - A_target, 0) + w_sp*min(S_t - S_ref, 0).

    ``sparsity="progress"`` (default) compares the global sparsity so far with the *scheduled*
    sparsity ``S_ref = target x (fraction of the episode's weights visited so far)``, i.e. where the
    network would be had every visited layer been pruned to the target. The penalty is then zero
    for any policy that keeps on schedule, and it reaches PuRL's ``min(S_T - S_target, 0)`` on the
    last step. With ``sparsity="global"`` ``S_ref`` is the target itself from the first step
    (PuRL's literal form): every early step is penalised for sparsity the network cannot have
    yet, which mostly rewards pruning the first layers hardest.

    Components: ``accuracy`` and ``sparsity`` (both <= 0).
    """

    name = "purl"
    defaults = {"w_acc": 1.0, "w_sp": 1.0, "sparsity": "progress"}
    choices = {"sparsity": ("progress", "global")}
    w_acc: float
    w_sp: float
    sparsity: str

    def __call__(self, ctx: RewardContext) -> dict[str, float]:
        reference = ctx.scheduled_sparsity if self.sparsity == "progress" else ctx.target_sparsity
        return {
            "accuracy": self.w_acc * min(ctx.accuracy - ctx.target_accuracy, 0.0),
            "sparsity": self.w_sp * min(ctx.global_sparsity - reference, 0.0),
        }
