"""Entry point of the ``purl`` console script.

Subcommands live in their own modules and are imported only when used, so
``purl --help`` is fast and the core never imports ``envs``/``agents``/``baselines``
at module level. User errors (:class:`~purl.errors.PurlError`) print one line
and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Sequence

from purl import __version__, lock
from purl.errors import PurlError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("purl.cli.pretrain", "train (or load the cached) dense model of a task"),
    "prune": ("purl.cli.prune", "prune the dense model with a baseline allocator, fine-tune, report"),
    "train": ("purl.cli.train", "train an RL pruning agent, apply its policy, fine-tune, report"),
    "compare": ("purl.cli.compare", "head-to-head grid: methods x sparsities x seeds"),
    "report": ("purl.cli.report", "regenerate summary.md and plots from a results.csv"),
    "list": ("purl.cli.listing", "list models, datasets, configs, methods, rewards, agents"),
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so a terminated run stops exactly like Ctrl-C does (an agent
    search saves its checkpoint, a grid keeps its finished cells), then exits 143 (128 + SIGTERM)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _available() -> dict[str, tuple[str, str]]:
    return {name: spec for name, spec in SUBCOMMANDS.items() if importlib.util.find_spec(spec[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="purl", description="PuRL: prune neural networks with RL, "
                                     "compared head-to-head with Global Magnitude Pruning.")
    parser.add_argument("--version", action="version", version=f"purl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in _available().items():
        module = importlib.import_module(module_name)
        child = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(child)
        child.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch, and turn user errors into one clear line and a non-zero exit."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting positional overrides at the first option; accept KEY=VALUE anywhere.
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return int(args._run(args) or 0)
    except PurlError as exc:
        print(f"purl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `purl ... | head`: the reader left; results are already written
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit (Python docs)
        return 0
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        resume = "; rerun with --resume to continue the search" if args.command == "train" else \
            "; the same command resumes" if args.command == "compare" else ""
        print(f"purl {args.command}: {how}; finished results are saved{resume}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        lock.release_all()  # the output folder's lock (purl.lock), taken by planned_output_dir


if __name__ == "__main__":
    sys.exit(main())
