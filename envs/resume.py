"""What an exact resume of an agent search needs from an environment (both PuRL envs mix :class:`ResumableEnv` in).

A search is checkpointed at a rollout boundary where every environment has just started an episode
(:mod:`agents.resume`). Such an environment is fully described by the state of its ``np_random`` before it drew
the episode's data seed (:meth:`ResumableEnv.resume_state`; the masks are the dense ones, the episode state is
fresh) and by its evaluator's memoised scores, which only save evaluations (the scores are the same either way).
A resumed search rebuilds the environments and resets each with ``options={"rng_state": ...}``
(:data:`RNG_OPTION`): the episode, its data seed and every later draw are those of the uninterrupted run.
"""

from __future__ import annotations

import copy
from typing import Any

RNG_OPTION = "rng_state"  # reset(options={RNG_OPTION: state}): start the episode from this np_random state


class ResumableEnv:
    """Mixin of :class:`envs.PruningEnv` (needs ``np_random``, ``evaluator``)."""

    _episode_rng_state: dict[str, Any] | None = None

    def _episode_seed(self, options: dict[str, Any] | None) -> int:
        """The new episode's data seed, drawn from ``np_random`` (first set to ``options[RNG_OPTION]`` if given);
        the state before the draw is kept for :meth:`resume_state`."""
        rng = self.np_random  # type: ignore[attr-defined]
        if options and options.get(RNG_OPTION) is not None:
            rng.bit_generator.state = copy.deepcopy(options[RNG_OPTION])
        self._episode_rng_state = copy.deepcopy(rng.bit_generator.state)
        return int(rng.integers(0, 2**31 - 1))

    def resume_state(self, memo_from: int = 0) -> dict[str, Any]:
        """``rng_state``: ``np_random``'s state before the current episode's draw (None before the first reset);
        ``memo``: the evaluator's memoised scores from the ``memo_from``-th on; ``memo_size``: how many there are."""
        evaluator = self.evaluator  # type: ignore[attr-defined]
        memo = evaluator.memo_items(memo_from)
        return {"rng_state": copy.deepcopy(self._episode_rng_state), "memo": memo,
                "memo_size": int(memo_from) + len(memo)}

    def load_memo(self, items: list[tuple[tuple[int, ...], float]]) -> None:
        """Add memoised scores saved by :meth:`resume_state` of an env of the same config."""
        self.evaluator.load_memo(items)  # type: ignore[attr-defined]
