"""Potential-based shaping of a terminal reward (Ng, Harada & Russell 1999)."""

from __future__ import annotations

from purl.envs.rewards.base import Reward, RewardContext
from purl.envs.rewards.registry import REWARDS
from purl.errors import ConfigError


@REWARDS.register("shaped")
class ShapedReward(Reward):
    """Terminal accuracy - lam*shortfall, densified by shaping F = gamma*Phi(s') - Phi(s); same optimal policy.

    The terminal reward is ``w_acc * A_T - lam * max(0, S_target - S_T)`` (the ``lagrangian``
    reward). The potential of a non-terminal state is
    ``Phi(s) = w_acc * A_t + w_sp * min(S_t - S_ref, 0)``, the accuracy of the network pruned so far
    plus a penalty for lagging behind the scheduled sparsity ``S_ref`` (see the ``purl`` reward);
    ``Phi`` of the terminal state is 0. With ``gamma`` equal to the agent's discount factor the
    discounted return differs from the unshaped one by the constant ``-Phi(s_0)``, so the optimal
    policy is unchanged (Ng et al. 1999, Theorem 1) while every step gets an informative signal.
    Components: ``terminal`` and ``shaping``.
    """

    name = "shaped"
    defaults = {"gamma": 0.99, "w_acc": 1.0, "w_sp": 1.0, "lam": 1.0}
    gamma: float
    w_acc: float
    w_sp: float
    lam: float

    def validate(self) -> None:
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"env.reward_kwargs.gamma (reward 'shaped') must be in (0, 1], got {self.gamma}")
        self._phi = 0.0

    def potential(self, ctx: RewardContext) -> float:
        """Phi(s): 0 at the terminal state."""
        if ctx.terminal:
            return 0.0
        return self.w_acc * ctx.accuracy + self.w_sp * min(ctx.global_sparsity - ctx.scheduled_sparsity, 0.0)

    def reset(self, ctx: RewardContext) -> None:
        self._phi = self.potential(ctx)

    def __call__(self, ctx: RewardContext) -> dict[str, float]:
        phi = self.potential(ctx)
        shaping = self.gamma * phi - self._phi
        self._phi = phi
        terminal = 0.0
        if ctx.terminal:
            terminal = self.w_acc * ctx.accuracy - self.lam * max(0.0, ctx.target_sparsity - ctx.global_sparsity)
        return {"terminal": terminal, "shaping": shaping}
