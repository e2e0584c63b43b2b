"""AMC's terminal rewards (He et al. 2018): nothing until the episode's last step."""

from __future__ import annotations

import math

from purl.envs.rewards.base import Reward, RewardContext
from purl.envs.rewards.registry import REWARDS


@REWARDS.register("amc")
class AmcAccuracy(Reward):
    """AMC's accuracy reward at the episode end only: scale * accuracy (0 on every earlier step).

    AMC writes it as ``accuracy(%) x 0.01``, which is the accuracy as a fraction. Component: ``accuracy``.
    """

    name = "amc"
    timing = "terminal"
    defaults = {"scale": 1.0}
    scale: float

    def __call__(self, ctx: RewardContext) -> dict[str, float]:
        return {"accuracy": self.scale * ctx.accuracy if ctx.terminal else 0.0}


@REWARDS.register("amc-flops")
class AmcErrorFlops(Reward):
    """AMC's resource-aware reward at the episode end only: -scale * error * log(FLOPs).

    ``error = 1 - accuracy``; FLOPs are the pruned network's MACs per sample (at least 1).
    Component: ``error_log_flops`` (<= 0).
    """

    name = "amc-flops"
    timing = "terminal"
    defaults = {"scale": 1.0}
    scale: float

    def __call__(self, ctx: RewardContext) -> dict[str, float]:
        if not ctx.terminal:
            return {"error_log_flops": 0.0}
        return {"error_log_flops": -self.scale * (1.0 - ctx.accuracy) * math.log(max(ctx.flops, 1.0))}
