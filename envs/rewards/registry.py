"""The reward registry and the checked construction / call of a reward."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from purl.envs.rewards.base import RewardContext
from purl.errors import ConfigError, PurlError, RegistryError
from purl.registry import Registry

REWARDS: Registry[Any] = Registry("reward")


def make_reward(name: str, kwargs: Mapping[str, Any] | None = None, granularity: str | None = None) -> Any:
    """Instantiate reward ``name`` (registered, or ``package.module:Class``) with ``kwargs``.

    Raises ConfigError for an unknown name, an object that is not a reward class, keyword arguments its
    ``__init__`` does not accept, or (``granularity`` given) a granularity outside the class's declared
    ``granularities`` (a plain callable without the declaration is taken to read any).
    """
    kwargs = dict(kwargs or {})
    try:
        cls = REWARDS.get(name)
    except RegistryError as exc:
        raise ConfigError(f"env.reward: {exc}") from None
    if not callable(cls):
        raise ConfigError(f"env.reward: '{name}' is a {type(cls).__name__}, not a reward class")
    declared = getattr(cls, "granularities", None)
    if granularity is not None and declared is not None and granularity not in declared:
        raise ConfigError(f"env.reward '{name}' declares granularities {', '.join(declared)}; it cannot score "
                          f"prune.granularity={granularity}")
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"env.reward_kwargs for reward '{name}': {exc}") from None
    except ValueError:  # no signature available (builtin); let the call decide
        pass
    try:
        reward = cls(**kwargs)
    except PurlError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"env.reward_kwargs for reward '{name}': {exc}") from None
    if not callable(reward):
        raise ConfigError(f"env.reward: '{name}' built a {type(reward).__name__}, which is not callable "
                          "(a reward must define __call__(ctx) -> dict[str, float])")
    return reward


def call_reward(reward: Any, ctx: RewardContext) -> dict[str, float]:
    """Call ``reward(ctx)`` and check it returned a non-empty mapping of names to finite floats."""
    out = reward(ctx)
    if not isinstance(out, Mapping) or not out:
        raise PurlError(f"reward {type(reward).__name__} must return a non-empty dict of name -> float, "
                        f"got {out!r}")
    comps: dict[str, float] = {}
    for key, value in out.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise PurlError(f"reward {type(reward).__name__} component '{key}' is not a number: {value!r}") from None
        if not math.isfinite(number):
            raise PurlError(f"reward {type(reward).__name__} component '{key}' is not finite: {number}")
        comps[str(key)] = number
    return comps


def reset_reward(reward: Any, ctx: RewardContext) -> None:
    """Call ``reward.reset(ctx)`` when the reward defines it (plain callables need not)."""
    reset = getattr(reward, "reset", None)
    if callable(reset):
        reset(ctx)
