"""A Lagrangian relaxation of the sparsity constraint, paid at the episode end."""

from __future__ import annotations

from purl.envs.rewards.base import Reward, RewardContext
from purl.envs.rewards.registry import REWARDS
from purl.errors import ConfigError


@REWARDS.register("lagrangian")
class LagrangianReward(Reward):
    """Terminal w_acc * accuracy - lam * max(0, S_target - S) (0 on earlier steps).

    The constraint "global sparsity >= target" is moved into the objective with multiplier
    ``lam``; useful with ``env.budget=false``, where the agent itself must reach the target
    (with the budget on, the penalty is always 0). Components: ``accuracy``, ``sparsity_penalty``.
    """

    name = "lagrangian"
    timing = "terminal"
    defaults = {"w_acc": 1.0, "lam": 1.0}
    w_acc: float
    lam: float

    def validate(self) -> None:
        if self.lam < 0:
            raise ConfigError(f"env.reward_kwargs.lam (reward 'lagrangian') must be >= 0, got {self.lam}")

    def __call__(self, ctx: RewardContext) -> dict[str, float]:
        if not ctx.terminal:
            return {"accuracy": 0.0, "sparsity_penalty": 0.0}
        shortfall = max(0.0, ctx.target_sparsity - ctx.global_sparsity)
        return {"accuracy": self.w_acc * ctx.accuracy, "sparsity_penalty": -self.lam * shortfall}
