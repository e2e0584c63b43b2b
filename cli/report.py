"""``purl report DIR``: regenerate summary.md and the plots of a comparison from its results.csv.

The comparison's settings come from ``--config FILE`` when given, else from the ``config.yaml`` that
``purl compare`` saved in DIR, so the report redraws what compare drew (``compare.profile_sparsity``,
the agents' algorithms in method names). ``--profile-sparsity`` overrides the profile's target.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from purl.errors import ConfigError, PurlError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="a `purl compare` output folder holding results.csv")
    parser.add_argument("--config", "-c", type=Path, default=None,
                        help="the comparison's config YAML (default: DIR/config.yaml, saved by `purl compare`)")
    parser.add_argument("--profile-sparsity", type=float, default=None,
                        help="target sparsity of the per-layer profile plot (default: the config's "
                             "compare.profile_sparsity, else the best-covered target)")


def run(args: argparse.Namespace) -> int:
    from purl.compare.cells import ResultsTable
    from purl.compare.report import pick_profile_sparsity, saved_config, write_report
    from purl.config import load_config

    directory: Path = args.directory
    csv_path = directory / "results.csv"
    if not csv_path.is_file():
        raise PurlError(f"'{csv_path}' does not exist; pass the output folder of a `purl compare` run")
    if args.profile_sparsity is not None and not 0.0 <= args.profile_sparsity < 1.0:
        raise ConfigError(f"--profile-sparsity must be in [0, 1) (a target sparsity of the grid), "
                          f"got {args.profile_sparsity:g}")
    if args.config is not None:
        config, source = load_config(args.config), str(args.config)
    else:
        source = str(directory / "config.yaml")
        try:
            config = saved_config(directory)
        except PurlError as exc:  # a damaged saved config must not stop a report from results.csv
            print(f"purl report: warning: ignoring {source}: {exc}", file=sys.stderr)
            config = None
    requested = args.profile_sparsity
    if requested is None and config is not None:
        requested = config.compare.profile_sparsity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the saved config's problem was reported above
        written = write_report(directory, profile_sparsity=requested, config=config)
    print((directory / "summary.md").read_text())
    if requested is not None:
        used = pick_profile_sparsity(ResultsTable.read(csv_path), requested)
        origin = "--profile-sparsity" if args.profile_sparsity is not None else f"compare.profile_sparsity of {source}"
        if used is not None and abs(used - requested) > 1e-9:
            print(f"purl report: warning: profile sparsity {requested:g} ({origin}) is not a target with results; "
                  f"plotted {used:g} instead", file=sys.stderr)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
