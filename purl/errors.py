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


class NumericalError(PurlError):
    """Weights or a training loss are NaN or infinite (a diverged run: learning rate too high, or bad data)."""


class DataError(PurlError):
    """A dataset is missing on disk, malformed or misconfigured."""


class OutputError(PurlError, OSError):
    """An output folder or file cannot be written (read-only folder, full disk, a file in the way).

    Also an :class:`OSError` (with ``errno``, ``strerror`` and ``filename`` of the underlying error when
    there is one), so code that catches ``OSError`` around a save keeps working; ``str()`` is the
    one-line message.
    """

    def __init__(self, message: str, cause: OSError | None = None) -> None:
        super().__init__(message)
        self.message = message
        if cause is not None:
            self.errno, self.strerror, self.filename = cause.errno, cause.strerror, cause.filename

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # noqa: ANN204 - picklable (Ray) despite the OSError base
        return (type(self), (self.message,))


class ResultsError(PurlError):
    """A results table (``results.csv``) is unreadable or is not a PuRL results table."""
