"""PuRL: pruning neural networks with reinforcement learning, with Global MP as the baseline.

The shared core lives here (masks, models, data, training, metrics, config, CLI).
``envs``, ``agents`` and ``baselines`` build on it. No ``purl`` module imports them at import time:
they register their methods in :data:`purl.methods.METHODS`, which ``load_methods`` fills on first
use, and the CLI subcommands import them inside ``run`` (``tests/test_methods.py`` checks this).
"""

__version__ = "0.1.0"
