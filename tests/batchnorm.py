"""One helper for the channel-pruning tests: BatchNorm layers with non-trivial statistics and affine parameters.

A freshly built model's BatchNorm is the identity (mean 0, var 1, weight 1, bias 0), under which a mask or a slimmed
model that ignores BatchNorm would still look right; these values make such a mistake visible.
"""

from __future__ import annotations

import torch
from torch import nn


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every affine BatchNorm of ``model`` gets random running statistics and affine parameters; -> ``model``, eval."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()
