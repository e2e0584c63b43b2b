"""PuRL: pruning neural networks with reinforcement learning, with Global MP as the baseline.

The shared core lives here (masks, models, data, training, metrics, config, CLI).
``envs``, ``agents`` and ``baselines`` build on it; this package imports none of them.
"""

__version__ = "0.1.0"
