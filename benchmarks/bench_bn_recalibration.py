"""Why the in-env reward is flat on BatchNorm networks: one-shot Global MP on mnist5k ResNet-20, test top-1
with the dense network's BatchNorm statistics vs after re-estimating them on 20 train batches (no training).

    python benchmarks/bench_bn_recalibration.py [--sparsities 0.5 0.8 0.9] [--batches 20]

Uses the cached dense model of configs/mnist5k-resnet20.yaml (pre-trains it once if absent).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from purl.baselines import Constraints, get_allocator  # noqa: E402
from purl.config import load_config  # noqa: E402
from purl.task import build_task  # noqa: E402
from purl.training import evaluate, recalibrate_batchnorm  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "mnist5k-resnet20.yaml", ["device=cpu"])
    task = build_task(config, torch.device("cpu"), progress=False)
    print(f"dense test top-1 {100 * task.dense_test.top1:.2f}%")
    print("| sparsity | top-1, dense BN statistics | top-1, recalibrated BN |\n|---:|---:|---:|")
    for sparsity in args.sparsities:
        model, masks = task.fresh_copy()
        get_allocator("global-mp").prune(masks, sparsity, Constraints())
        stale = evaluate(model, task.loader("test"), device=task.device).top1
        batches = [x for _, (x, _) in zip(range(args.batches), task.loader("train"), strict=False)]
        recalibrate_batchnorm(model, batches)
        fresh = evaluate(model, task.loader("test"), device=task.device).top1
        print(f"| {sparsity:g} | {100 * stale:.2f} | {100 * fresh:.2f} |")


if __name__ == "__main__":
    main()
