"""User-facing error types.

Every problem the user can fix (bad config, unknown name, corrupt checkpoint,
impossible sparsity) is raised as a :class:`PurlError` subclass. The CLI prints
its message on one line and exits non-zero without a traceback; library users
can catch it like any exception.
"""

from __future__ import annotations


class PurlError(Exception):
    """Base class of errors caused by user input, with an actionable message."""


class ConfigError(PurlError):
    """A config key is unknown, mistyped or out of range."""


class RegistryError(PurlError):
    """A name (model, dataset, allocator, reward, agent) is not registered."""


class CheckpointError(PurlError):
    """A checkpoint file is missing, corrupt or incompatible."""


class PruningError(PurlError):
    """A pruning request cannot be satisfied (nothing prunable, bad sparsity)."""


class DataError(PurlError):
    """A dataset is missing on disk, malformed or misconfigured."""
