"""Reward designs of the pruning environment, chosen by ``env.reward`` (weights in ``env.reward_kwargs``).

Built in (``purl list``-style descriptions via ``REWARDS.describe()``):

* ``purl`` -- PuRL's dense per-step reward ``w_acc*min(A_t - A_target, 0) + w_sp*min(S_t - S_ref, 0)``
  (kwargs ``w_acc=1.0``, ``w_sp=1.0``, ``sparsity="progress"|"global"``);
* ``amc`` -- AMC's terminal ``scale * accuracy`` (kwarg ``scale=1.0``);
* ``amc-flops`` -- AMC's terminal ``-scale * error * log(FLOPs)`` (kwarg ``scale=1.0``);
* ``lagrangian`` -- terminal ``w_acc * accuracy - lam * max(0, S_target - S)`` (kwargs ``w_acc``, ``lam``);
* ``shaped`` -- the ``lagrangian`` terminal reward plus potential-based shaping
  ``gamma*Phi(s') - Phi(s)`` (kwargs ``gamma=0.99``, ``w_acc``, ``w_sp``, ``lam``).

A reward returns its components (name -> float); the step's reward is their sum, and the env
reports them in ``info["reward_components"]``. Your own reward is named ``package.module:Class``
in the config (``env.reward=mypkg.rewards:OnTrackBonus``), e.g.::

    from purl.envs.rewards import Reward, RewardContext

    class OnTrackBonus(Reward):  # +bonus per step above the accuracy target, accuracy at the end
        defaults = {"bonus": 0.1}  # env.reward_kwargs keys and defaults (types are checked)

        def __call__(self, ctx: RewardContext) -> dict[str, float]:
            on_track = ctx.accuracy >= ctx.target_accuracy
            return {
                "bonus": self.bonus if on_track else 0.0,
                "final": ctx.accuracy if ctx.terminal else 0.0,
            }

Any class works whose ``__init__`` takes the kwargs and whose instances are callable as
``reward(ctx) -> dict[str, float]``; an optional ``reset(ctx)`` is called at each episode start.
"""

from purl.envs.rewards import amc, dense, lagrangian, shaped  # noqa: F401  (register the built-ins)
from purl.envs.rewards.base import Reward, RewardContext
from purl.envs.rewards.registry import REWARDS, call_reward, make_reward, reset_reward

__all__ = ["REWARDS", "Reward", "RewardContext", "call_reward", "make_reward", "reset_reward"]
