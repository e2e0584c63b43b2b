"""The Gymnasium ids of PuRL's environments and their registration, without importing ``purl.envs``.

``purl.envs`` registers both ids when imported. A worker process that builds an env by id may never import it:
SB3's ``SubprocVecEnv`` and Gymnasium's ``AsyncVectorEnv`` under ``spawn``/``forkserver`` (Python 3.14's default on
Linux) start from a fresh interpreter that imports only what unpickling the env function needs, and the parent's
``__main__`` is not re-imported under pytest or Jupyter. So unpickling an :class:`purl.config.ExperimentConfig`
(the usual ``env_kwargs={"config": cfg}``) registers them too (:func:`register_gym_envs`). A worker given no PuRL
object at all can name the module in the id: ``gymnasium.make("purl.envs:purl/Pruning-v0")``.
"""

from __future__ import annotations

ENV_ID = "purl/Pruning-v0"
CHANNEL_ENV_ID = "purl/ChannelPruning-v0"
ENTRY_POINTS = {ENV_ID: "purl.envs.pruning_env:PruningEnv", CHANNEL_ENV_ID: "purl.envs.pruning_env:PruningEnv"}
#: keyword arguments each id adds: the channel id is the same env at ``prune.granularity`` channel
ENV_KWARGS: dict[str, dict[str, str]] = {ENV_ID: {}, CHANNEL_ENV_ID: {"granularity": "channel"}}


def register_gym_envs() -> None:
    """Register both ids with Gymnasium (string entry points: nothing of ``purl.envs`` is imported); idempotent."""
    import gymnasium

    for env_id, entry_point in ENTRY_POINTS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, nondeterministic=False,
                               kwargs=dict(ENV_KWARGS[env_id]))
