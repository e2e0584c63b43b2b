"""Benchmark: re-time the exported models of a channel-granularity `purl compare` folder, side by side.

    python benchmarks/bench_cell_latency.py DIR [DIR ...] [--batches 1,64] [--repeats 30] [--threads 1]
        [--output STEM]

``purl compare ... prune.granularity=channel`` writes every cell's slimmed model to
``DIR/cells/<cell>/pruned.pt2`` and ``pruned.onnx``. Its own ``latency_ratio`` column is measured inside the
run, right after each cell, so it shares the machine with whatever else runs then. This script times all the
cells of one or more folders *afterwards, in one process, interleaved* (each repeat runs every model once, in
turn, so all of them see the same load), against the dense model of the folder's task exported the same way:

* ``eager``: the ``torch.export`` program (``torch.export.load(p).module()``), dense and pruned alike;
* ``onnxruntime``: the ONNX files on ONNX Runtime's CPU provider.

Medians per model and batch, the latency ratio pruned / dense, and per (method, target) the median ratio
over seeds with its range, next to the measured FLOPs ratio. Threads: 1 by default (torch and ORT intra-op),
because the machine is shared; the numbers stay noisy and the output says so. Results:
``STEM.csv`` and ``STEM.md`` (default ``DIR/cell_latency``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import log, markdown_table, write_csv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", type=Path, help="purl compare output folders at prune.granularity=channel")
    p.add_argument("--batches", default="1,64", help="comma-separated batch sizes (default 1,64)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per model and batch (median)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--output", type=Path, default=None, help="output stem (default DIR/cell_latency)")
    args = p.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if not args.batches or min(args.batches) < 1 or args.repeats < 1:
        p.error("--batches must be positive integers and --repeats >= 1")
    return args


def folder_models(folder: Path, tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The folder's dense model (exported like the cells) and its channel cells' exported models."""
    import torch

    from purl.compare import ResultsTable
    from purl.compare.cells import Cell
    from purl.config import load_config
    from purl.export import export_model, load_onnx, load_program
    from purl.task import build_task

    config = load_config(folder / "config.yaml", ["device=cpu"])
    task = build_task(config, torch.device("cpu"), progress=False)
    example = torch.randn((2, *task.data.input_shape), generator=torch.Generator().manual_seed(0))
    exported = export_model(task.model.cpu().eval(), example, tmp / folder.name, name="dense")
    dense = {"folder": str(folder), "label": "dense", "program": load_program(exported.paths["pt2"]),
             "onnx": load_onnx(exported.paths["onnx"]), "flops_ratio": 1.0, "input_shape": task.data.input_shape}
    cells = []
    for row in ResultsTable.read(folder / "results.csv"):
        if row.get("granularity") != "channel" or row.get("status") != "ok":
            continue
        cell = Cell(row["label"], row["method"], float(row["target_sparsity"]), int(row["seed"]))
        where = folder / "cells" / cell.slug
        if not (where / "pruned.pt2").is_file() or not (where / "pruned.onnx").is_file():
            log(f"  {where}: no exported model, skipped")
            continue
        cells.append({"folder": str(folder), "label": row["label"], "target": float(row["target_sparsity"]),
                      "seed": int(row["seed"]), "flops_ratio": float(row["flops_ratio"]),
                      "after_test_top1": float(row["after_test_top1"]), "in_run_latency_ratio": row["latency_ratio"],
                      "program": load_program(where / "pruned.pt2"), "onnx": load_onnx(where / "pruned.onnx")})
    return dense, cells


def run_once(model: dict[str, Any], runtime: str, x: Any, feed: Any) -> None:
    """One forward pass of ``model`` on ``runtime`` (``eager``: the torch.export program; else ONNX Runtime)."""
    if runtime == "eager":
        model["program"](x)
    else:
        model["onnx"].run(None, {model["onnx"].get_inputs()[0].name: feed})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from purl.latency import interleaved_medians

    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for folder in args.dirs:
            if not (folder / "results.csv").is_file() or not (folder / "config.yaml").is_file():
                print(f"error: '{folder}' is not a purl compare folder (no results.csv / config.yaml)", file=sys.stderr)
                return 2
            log(f"{folder}: loading the dense model and the exported cells")
            dense, cells = folder_models(folder, Path(tmp))
            if not cells:
                print(f"error: '{folder}' has no channel-granularity cell with an exported model", file=sys.stderr)
                return 2
            models = [dense, *cells]
            for batch in args.batches:
                x = torch.randn((batch, *dense["input_shape"]), generator=torch.Generator().manual_seed(1))
                feed = x.numpy()
                for runtime in ("eager", "onnxruntime"):
                    with torch.no_grad():
                        calls = [lambda m=m, r=runtime, x=x, f=feed: run_once(m, r, x, f) for m in models]
                        medians = interleaved_medians(calls,
                                                      repeats=args.repeats, warmup=args.warmup)
                    log(f"  batch {batch} {runtime}: dense {1e3 * medians[0]:.2f} ms")
                    for m, seconds in zip(cells, medians[1:], strict=True):
                        rows.append({"folder": m["folder"], "method": m["label"], "target": m["target"],
                                     "seed": m["seed"], "batch": batch, "runtime": runtime,
                                     "dense_ms": 1e3 * medians[0], "pruned_ms": 1e3 * seconds,
                                     "latency_ratio": seconds / medians[0], "flops_ratio": m["flops_ratio"],
                                     "after_test_top1": m["after_test_top1"]})
    stem = args.output or (args.dirs[0] / "cell_latency")
    write_csv(stem.with_suffix(".csv"), rows)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["target"], r["runtime"], r["batch"]), []).append(r)
    table = []
    for (method, target, runtime, batch), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2],
                                                                                    kv[0][3])):
        ratios = [r["latency_ratio"] for r in rs]
        table.append({"keep": f"{1 - target:g}", "method": method, "runtime": runtime, "batch": batch,
                      "cells": len(rs), "flops": statistics.median(r["flops_ratio"] for r in rs),
                      "ratio": statistics.median(ratios), "range": f"{min(ratios):.3f}-{max(ratios):.3f}",
                      "dense_ms": statistics.median(r["dense_ms"] for r in rs)})
    columns = [("keep", "kept FLOPs target"), ("method", "method"), ("runtime", "runtime"), ("batch", "batch"),
               ("cells", "cells"), ("flops", "FLOPs ratio"), ("ratio", "latency ratio (median)"),
               ("range", "range"), ("dense_ms", "dense ms")]
    text = (f"Median latency ratio pruned / dense over seeds (range), {args.threads} thread(s), {args.repeats} "
            "interleaved repeats; shared machine, noisy.\n\n" + markdown_table(table, columns, digits=3))
    stem.with_suffix(".md").write_text(text + "\n")
    print(text)
    log(f"results: {stem.with_suffix('.csv')}, {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
