"""The granularities :class:`envs.PruningEnv` is built on, by ``prune.granularity`` name.

Adding one (N:M, attention heads) is a :class:`Granularity` subclass in this package and a line in
:data:`GRANULARITIES`; :func:`granularity_class` is the one lookup (the env, and the agent method's
validation, :meth:`Granularity.check`).
"""

from __future__ import annotations

from purl.config import ExperimentConfig
from purl.envs.granularity.base import Granularity
from purl.envs.granularity.channel import ChannelGranularity
from purl.envs.granularity.weight import WeightGranularity
from purl.errors import ConfigError

__all__ = ["GRANULARITIES", "ChannelGranularity", "Granularity", "WeightGranularity", "granularity_class"]

GRANULARITIES: dict[str, type[Granularity]] = {cls.name: cls for cls in (WeightGranularity, ChannelGranularity)}


def granularity_class(config: ExperimentConfig) -> type[Granularity]:
    """The :class:`Granularity` of ``config.prune.granularity`` (ConfigError naming the known ones)."""
    name = config.prune.granularity
    try:
        return GRANULARITIES[name]
    except KeyError:
        raise ConfigError(f"prune.granularity '{name}' has no env; allowed: {', '.join(GRANULARITIES)}") from None
