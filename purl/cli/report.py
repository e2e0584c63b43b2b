"""``purl report DIR``: regenerate summary.md and the plots of a comparison from its results.csv alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from purl.errors import PurlError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="a `purl compare` output folder holding results.csv")
    parser.add_argument("--profile-sparsity", type=float, default=None,
                        help="target sparsity of the per-layer profile plot (default: the best-covered one)")


def run(args: argparse.Namespace) -> int:
    from purl.compare import write_report

    csv_path = args.directory / "results.csv"
    if not csv_path.is_file():
        raise PurlError(f"'{csv_path}' does not exist; pass the output folder of a `purl compare` run")
    written = write_report(args.directory, profile_sparsity=args.profile_sparsity)
    print((args.directory / "summary.md").read_text())
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
