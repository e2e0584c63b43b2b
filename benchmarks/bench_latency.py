"""Benchmark: measured latency of dense vs channel-pruned vs 90 % unstructured models, on CPU (and CUDA).

Run ``python benchmarks/bench_latency.py [--quick] [--models resnet20,lenet5,resnet18] [--ratios 0.5,0.25]
[--batches 1,64] [--repeats N] [--method uniform|global-mp|erk|lamp] [--threads 1] [--output DIR]``.

For every model it builds, in one process and with random weights (latency does not depend on accuracy):

* ``dense``: the model as built;
* ``channel-<r>``: the model physically slimmed by Torch-Pruning (:func:`purl.pruning.channels.prune_channels`)
  to a FLOPs keep ratio ``r`` (Conv/Linear MACs), channel counts from ``--method``'s channel form (default
  ``uniform``: the same fraction of every group, tuned so the MACs land at ``r`` within one channel);
* ``unstructured-90``: Global MP at 90 % weight sparsity, i.e. the *masked dense* model (zeros at full shape).

Each is timed with PyTorch eager on CPU and with ONNX Runtime on CPU (the ONNX file comes from
:func:`purl.export.export_model`, checked against the model), at every batch size; plus PyTorch eager on
CUDA when a GPU is present (the column says ``unrun`` otherwise). Repeats are interleaved (each repeat times
every variant once, in turn) so that all variants see the same machine load; the table shows medians in
milliseconds, the latency ratio to the dense model next to the theoretical FLOPs ratio (for the
unstructured model: its sparse-FLOPs ratio, i.e. what the masks claim, not what a dense kernel does).

Threads: 1 by default (``torch.set_num_threads(1)``, ORT ``intra_op_num_threads=1``) because the project's
CI machine has two cores that are usually shared with background jobs; even so, the numbers are noisy and the
output says so. Models: ``resnet20`` (CIFAR ResNet-20 at 3x32x32), ``lenet5`` (LeNet-5 at 1x28x28),
``resnet18`` (torchvision ResNet-18 at 3x224x224, 1000 classes). ``--quick`` (under about a minute): LeNet-5
and ResNet-20 only, 3 repeats. Results: ``<output>/bench_latency[_quick].{csv,json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, log, markdown_table, write_csv

MODELS: dict[str, dict[str, Any]] = {
    "lenet5": {"name": "lenet-5", "input_shape": (1, 28, 28), "num_classes": 10},
    "resnet20": {"name": "resnet-20", "input_shape": (3, 32, 32), "num_classes": 10},
    "resnet18": {"name": "torchvision:resnet18", "input_shape": (3, 224, 224), "num_classes": 1000},
}

NOTE = (
    "Latency: median wall time per forward pass in ms; {threads} CPU thread(s) (torch.set_num_threads, ORT "
    "intra_op_num_threads); this machine is shared with background jobs, so the numbers are noisy. "
    "lat/dense = latency ratio to the dense model of the same runtime and batch; FLOPs ratio = theoretical "
    "Conv/Linear MACs ratio (unstructured: sparse-FLOPs ratio, which dense kernels do not realise)."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="LeNet-5 and ResNet-20 only, 3 repeats (< ~1 minute)")
    p.add_argument("--models", default=None, help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--ratios", default="0.5,0.25", help="FLOPs keep ratios of the channel-pruned models")
    p.add_argument("--batches", default="1,64", help="batch sizes")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per cell (default 10, quick 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    p.add_argument("--method", default="uniform", choices=["uniform", "global-mp", "erk", "lamp"],
                   help="channel allocator (its channel form)")
    p.add_argument("--unstructured", type=float, default=0.9, help="weight sparsity of the masked dense model")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch and ONNX Runtime")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    default_models = "lenet5,resnet20" if args.quick else "lenet5,resnet20,resnet18"
    args.models = [m.strip() for m in (args.models or default_models).split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; allowed: {', '.join(MODELS)}")
    try:
        args.ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError as exc:
        p.error(f"--ratios takes numbers in (0, 1] and --batches positive integers: {exc}")
    if not args.ratios or any(not 0 < r <= 1 for r in args.ratios):
        p.error("--ratios takes numbers in (0, 1], e.g. 0.5,0.25")
    if not args.batches or any(b < 1 for b in args.batches):
        p.error("--batches takes positive integers, e.g. 1,64")
    if not 0 <= args.unstructured < 1:
        p.error("--unstructured takes a sparsity in [0, 1)")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    args.repeats = args.repeats or (3 if args.quick else 10)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def build_variants(key: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Dense, channel-pruned and unstructured versions of model ``key``, each with an ONNX session."""
    import torch

    from purl.baselines.channel import keep_for_ratio
    from purl.baselines.global_mp import global_magnitude_prune
    from purl.export import export_model, load_onnx
    from purl.models import build_model
    from purl.pruning.channels import channel_graph, measure_model, prune_channels

    spec = MODELS[key]
    torch.manual_seed(0)
    dense = build_model(spec["name"], input_shape=spec["input_shape"], num_classes=spec["num_classes"]).eval()
    example = torch.randn(2, *spec["input_shape"])
    graph = channel_graph(dense, example)
    variants: list[dict[str, Any]] = [{"variant": "dense", "kind": "dense", "model": dense, "flops_ratio": 1.0}]
    for ratio in args.ratios:
        keep = keep_for_ratio(graph, ratio, method=args.method)
        slim = prune_channels(dense, example, keep, graph=graph).eval()
        variants.append({"variant": f"channel-{ratio:g}", "kind": "channel", "model": slim, "target": ratio})
    if args.unstructured > 0:
        masked = build_model(spec["name"], input_shape=spec["input_shape"], num_classes=spec["num_classes"]).eval()
        masked.load_state_dict(dense.state_dict())
        global_magnitude_prune(masked, args.unstructured)
        sparse = 0.0
        modules = dict(masked.named_modules())
        for name, layer in graph.layers.items():
            weight = modules[name].weight
            sparse += layer.macs * float((weight != 0).float().mean())
        variants.append({
            "variant": f"unstructured-{round(args.unstructured * 100)}", "kind": "unstructured (masked dense)",
            "model": masked, "sparse_flops_ratio": sparse / graph.dense_macs,
        })
    dense_cost = measure_model(dense, example)
    for v in variants:
        cost = measure_model(v["model"], example)
        v["params"] = cost.params
        v["macs"] = cost.macs
        v["flops_ratio"] = v.get("sparse_flops_ratio", cost.macs / dense_cost.macs)
        granularity = "weight" if v["kind"].startswith("unstructured") else "channel"
        result = export_model(v["model"], example, tmp, name=f"{key}-{v['variant']}", formats=["onnx"],
                              granularity=granularity)
        v["onnx"] = load_onnx(result.paths["onnx"], threads=args.threads)
    return variants


def time_cells(variants: list[dict[str, Any]], x: Any, runtime: str, args: argparse.Namespace) -> list[float]:
    """Median seconds per forward of every variant, repeats interleaved across variants."""
    import torch

    def call(v: dict[str, Any]) -> None:
        if runtime == "onnxruntime":
            sess = v["onnx"]
            sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        elif runtime == "cuda":
            v["cuda_model"](x)
            torch.cuda.synchronize()
        else:
            v["model"](x)

    from purl.latency import interleaved_medians

    with torch.no_grad():
        return interleaved_medians([lambda v=v: call(v) for v in variants], repeats=args.repeats,
                                   warmup=args.warmup)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write CSV/JSON/Markdown results."""
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    rows: list[dict[str, Any]] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="purl-latency-") as tmp:
        for key in args.models:
            log(f"{key}: building dense, channel {args.ratios} ({args.method}), unstructured {args.unstructured:g}")
            variants = build_variants(key, args, Path(tmp))
            if cuda:
                for v in variants:
                    v["cuda_model"] = copy.deepcopy(v["model"]).cuda().eval()
            for batch in args.batches:
                x = torch.randn(batch, *MODELS[key]["input_shape"])
                times = {rt: time_cells(variants, x, rt, args) for rt in ("eager", "onnxruntime")}
                if cuda:
                    times["cuda"] = time_cells(variants, x.cuda(), "cuda", args)
                log(f"{key} batch {batch}: timed {len(variants)} variants")
                for i, v in enumerate(variants):
                    row: dict[str, Any] = {
                        "model": key, "variant": v["variant"], "kind": v["kind"], "batch": batch,
                        "params": v["params"], "macs": v["macs"], "flops_ratio": round(v["flops_ratio"], 4),
                    }
                    for rt, label in (("eager", "cpu_eager"), ("onnxruntime", "cpu_ort"), ("cuda", "cuda_eager")):
                        if rt not in times:
                            row[f"{label}_ms"], row[f"{label}_ratio"] = "unrun", "unrun"
                            continue
                        row[f"{label}_ms"] = round(times[rt][i] * 1e3, 4)
                        row[f"{label}_ratio"] = round(times[rt][i] / times[rt][0], 3)
                    rows.append(row)
    elapsed = time.time() - started
    note = NOTE.format(threads=args.threads)
    columns = [
        ("model", "model"), ("variant", "variant"), ("batch", "batch"), ("params", "params"),
        ("flops_ratio", "FLOPs ratio"), ("cpu_eager_ms", "eager ms"), ("cpu_eager_ratio", "eager lat/dense"),
        ("cpu_ort_ms", "ORT ms"), ("cpu_ort_ratio", "ORT lat/dense"), ("cuda_eager_ms", "CUDA ms"),
        ("cuda_eager_ratio", "CUDA lat/dense"),
    ]
    table = markdown_table(rows, columns, digits=3)
    stem = "bench_latency_quick" if args.quick else "bench_latency"
    meta = {
        "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup, "method": args.method,
        "ratios": args.ratios, "batches": args.batches, "unstructured": args.unstructured, "cuda": cuda,
        "torch": torch.__version__, "elapsed_s": round(elapsed, 1), "note": note,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    write_csv(args.output / f"{stem}.csv", rows)
    (args.output / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = f"# Latency: dense vs channel-pruned vs unstructured\n\n{note}\n\n{table}\n\n`{' '.join(sys.argv)}`, " \
         f"{args.repeats} repeats, {elapsed:.0f} s, torch {torch.__version__}, CUDA: {'yes' if cuda else 'unrun'}\n"
    (args.output / f"{stem}.md").write_text(md)
    print(note)
    print(table)
    log(f"wrote {args.output / stem}.{{csv,json,md}} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
