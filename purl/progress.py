"""PuRL's one progress display: a tqdm bar on a terminal, periodic plain lines anywhere else.

Every progress indicator of PuRL (pre-training and fine-tuning steps, the agent search, the comparison grid)
is made by :func:`progress_bar`, and every line printed while a bar may be on screen (``purl compare``'s
``[k/N] ...`` result lines) goes through :func:`write`, so that:

* on a terminal, the bar is tqdm's (``tqdm.auto``: a widget in Jupyter) and a :func:`write` line clears it
  first and redraws it below (``tqdm.write``): a result line never shares a line with a bar;
* when the stream is not a terminal (a log file, a pipe, CI), there are no ``\\r`` updates at all: a bar is
  one plain line every :data:`EVERY_FRACTION` of its total (at most one per :data:`MIN_SECONDS`), one at least
  every :data:`MAX_SECONDS` while it advances, and a last one when it closes, each ending in a newline;
  ``plain=False`` makes a bar silent there instead (the grid, whose result lines already say how far it is).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

EVERY_FRACTION = 0.1  # plain mode: a line each time another tenth of the total is done...
MIN_SECONDS = 2.0  # ...but not within this many seconds of the previous line (a fast bar prints its end only)
MAX_SECONDS = 60.0  # and at least one line per minute while it advances


def is_interactive(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) shows a live bar: a terminal, or a Jupyter kernel's output."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
    return "ipykernel" in sys.modules and stream in (sys.stderr, sys.stdout)


def write(message: str, file: IO[str] | None = None) -> None:
    """Print ``message`` as whole lines (default on ``sys.stdout``), never on the line of a progress bar."""
    from tqdm.auto import tqdm

    stream = sys.stdout if file is None else file
    tqdm.write(message, file=stream)
    stream.flush()


class NullProgress:
    """A disabled bar: the same methods, no output."""

    def __init__(self, total: int | None = None, initial: int = 0) -> None:
        self.total = total
        self.n = int(initial)

    def update(self, n: int = 1) -> None:
        self.n += int(n)

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainProgress(NullProgress):
    """Progress as plain lines (``desc: n/total unit (p%), Xs elapsed[, ~Ys left][, postfix]``), see module docs."""

    def __init__(self, total: int | None, *, desc: str, unit: str = "it", initial: int = 0,
                 file: IO[str] | None = None) -> None:
        super().__init__(total, initial)
        self.desc = desc
        self.unit = unit
        self.file = file
        self._start = time.monotonic()
        self._last_time = self._start
        self._last_n = self._initial = self.n
        self._step = max(1, round(EVERY_FRACTION * total)) if total else None
        self._next = (self.n // self._step + 1) * self._step if self._step else None
        self._postfix = ""
        self._closed = False

    def update(self, n: int = 1) -> None:
        super().update(n)
        now = time.monotonic()
        crossed = self._next is not None and self.n >= self._next
        if crossed:
            self._next = (self.n // self._step + 1) * self._step  # type: ignore[operator]
        if self.n != self._last_n and ((crossed and now - self._last_time >= MIN_SECONDS)
                                       or now - self._last_time >= MAX_SECONDS):
            self._emit(now)

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._last_n:
                self._emit(time.monotonic())

    def line(self, now: float | None = None) -> str:
        """The line describing the progress so far."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        unit = self.unit if self.unit.endswith("s") else self.unit + "s"
        if self.total:
            text = f"{self.desc}: {self.n}/{self.total} {unit} ({100 * self.n / self.total:.0f}%)"
        else:
            text = f"{self.desc}: {self.n} {unit}"
        text += f", {elapsed:.1f}s elapsed"
        done = self.n - self._initial
        if self.total and self.n < self.total and done > 0:
            text += f", ~{elapsed / done * (self.total - self.n):.0f}s left"
        if self._postfix:
            text += f", {self._postfix}"
        return text

    def _emit(self, now: float) -> None:
        stream = sys.stderr if self.file is None else self.file
        sys.stdout.flush()  # stdout's buffered lines first: the two streams often share one log file
        stream.write(self.line(now) + "\n")
        stream.flush()
        self._last_time, self._last_n = now, self.n


def progress_bar(total: int | None, *, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True,
                 leave: bool = False, plain: bool = True, file: IO[str] | None = None) -> Any:
    """A progress indicator of ``total`` ``unit``\\ s starting at ``initial``: a tqdm bar when ``file`` (default
    ``sys.stderr``) is interactive (:func:`is_interactive`), else :class:`PlainProgress` lines (or nothing when
    ``plain`` is False), and :class:`NullProgress` when not ``enabled``. All three have ``update(n)``,
    ``set_postfix(**values)``, ``close()`` and ``n``."""
    if not enabled:
        return NullProgress(total, initial)
    if is_interactive(file):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                    file=file)
    if not plain:
        return NullProgress(total, initial)
    return PlainProgress(total, desc=desc, unit=unit, initial=initial, file=file)
