"""Env step speed: the prefix-activation cache against full forward passes, per model, in one run.

For mnist5k LeNet-5, mnist5k ResNet-20 and a torchvision ResNet-18 (32x32 inputs, random weights:
this measures the env, not accuracy), two environments walk the same random episodes with every
evaluation real (``cache_evaluations=False``) and the default BatchNorm recalibration (``auto``):

  (full)   ``activation_cache_mb=0``: every step runs the whole network (and re-estimates every BN);
  (cached) the default: every step runs only the suffix from the layer just pruned.

Episodes of the two alternate, so machine-load drift hits both alike. Printed per model: median episode
time, steps/s, the speed-up full/cached (target >= 2x on ResNet-20), whether every step's accuracy was
identical, and the median reset time. ``--contend`` keeps one core busy with a competing process for
the whole run (a shared machine's busy neighbour); run it both ways to see both ratios.

    .venv/bin/python benchmarks/bench_env.py [--episodes 5] [--contend] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import write_csv  # noqa: E402
from purl.config import load_config  # noqa: E402
from purl.envs import PruningEnv  # noqa: E402
from purl.runtime import resolve_device  # noqa: E402
from purl.task import build_task  # noqa: E402

MNIST = ["data.name=mnist5k", "data.val_fraction=0.1", "data.test_fraction=0.2", "env.val_samples=500",
         "pretrain.epochs=1", "pretrain.max_steps=20"]
TASKS = {
    "mnist5k-lenet5": [*MNIST, "model.name=lenet-5"],
    "mnist5k-resnet20": [*MNIST, "model.name=resnet-20"],
    "cifar-shaped-resnet18": ["data.name=digits", "model.name=torchvision:resnet18", "data.max_samples=800",
                              "env.val_samples=128", "pretrain.epochs=1", "pretrain.max_steps=1"],
}
TARGET = 2.0


def _spin(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _episode(env: PruningEnv, actions: list[np.ndarray]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    accuracies = []
    for action in actions:
        _, _, _, _, info = env.step(action)
        accuracies.append(info["accuracy"])
    return time.perf_counter() - start, accuracies


def bench_task(label: str, overrides: list[str], device: torch.device, episodes: int, cache_dir: str | None) -> dict:
    config = load_config(None, overrides + ([f"cache_dir={cache_dir}"] if cache_dir else []))
    task = build_task(config, device, progress=False)
    common = {"finetune_steps": 0, "cache_evaluations": False, "action": "sparsity-continuous",
              "target_sparsity": 0.9}
    full = PruningEnv(config, task=task, device=device, activation_cache_mb=0, **common)
    cached = PruningEnv(config, task=task, device=device, **common)
    rng = np.random.default_rng(0)
    full_s, cached_s, reset_s, identical = [], [], [], True
    for episode in range(episodes + 1):  # the first pair is a warm-up
        actions = [rng.uniform(-1.0, 1.0, size=(1,)).astype(np.float32) for _ in range(full.n_steps)]
        full.reset(seed=episode)
        cached.reset(seed=episode)
        t_full, acc_full = _episode(full, actions)
        t_cached, acc_cached = _episode(cached, actions)
        start = time.perf_counter()
        cached.reset(seed=episode)
        t_reset = time.perf_counter() - start
        identical &= acc_full == acc_cached
        if episode:
            full_s.append(t_full)
            cached_s.append(t_cached)
            reset_s.append(t_reset)
    a, b = statistics.median(full_s), statistics.median(cached_s)
    return {
        "task": label, "device": str(device), "layers": full.n_layers, "val_samples": full.evaluator.n,
        "bn_recalibration_batches": full.bn_recalibration_batches, "episodes": episodes,
        "full_episode_s": a, "cached_episode_s": b,
        "full_steps_per_s": full.n_steps / a, "cached_steps_per_s": cached.n_steps / b,
        "speedup": a / b,
        "speedup_paired": statistics.median(f / c for f, c in zip(full_s, cached_s, strict=True)),
        "identical_accuracies": identical, "reset_ms": 1e3 * statistics.median(reset_s),
        "prefix_cache": cached.evaluator.plan is not None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5, help="timed episode pairs per model (medians reported)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"), help="directory for CSV/JSON")
    parser.add_argument("--cache-dir", default=None, help="dense-model cache (default: the config's)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--contend", action="store_true", help="keep one core busy with a competing process")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    stop = multiprocessing.Event()
    contender = multiprocessing.Process(target=_spin, args=(stop,), daemon=True) if args.contend else None
    if contender is not None:
        contender.start()
    try:
        rows = [bench_task(name, TASKS[name], device, args.episodes, args.cache_dir) for name in args.tasks]
    finally:
        stop.set()
        if contender is not None:
            contender.join()
    print(f"{'task':22} {'val':>4} {'BN':>3} {'full ep s':>9} {'cached ep s':>11} {'full st/s':>9} "
          f"{'cached st/s':>11} {'speedup':>7} {'paired':>6} {'identical':>9} {'reset ms':>8}")
    for r in rows:
        print(f"{r['task']:22} {r['val_samples']:4d} {r['bn_recalibration_batches']:3d} {r['full_episode_s']:9.3f} "
              f"{r['cached_episode_s']:11.3f} {r['full_steps_per_s']:9.2f} {r['cached_steps_per_s']:11.2f} "
              f"{r['speedup']:6.2f}x {r['speedup_paired']:5.2f}x {str(r['identical_accuracies']):>9} "
              f"{r['reset_ms']:8.2f}")
    print(f"contender: {'one busy core' if args.contend else 'none'}; threads {args.threads}; "
          f"target: ResNet-20 speed-up >= {TARGET}x with identical accuracies")
    out = Path(args.output)
    suffix = "_contend" if args.contend else ""
    write_csv(out / f"bench_env{suffix}.csv", rows)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "threads": args.threads, "contend": args.contend, "target": TARGET}
    (out / f"bench_env{suffix}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {out / f'bench_env{suffix}.csv'} and {out / f'bench_env{suffix}.json'}")
    resnet = [r for r in rows if r["task"] == "mnist5k-resnet20"]
    ok = all(r["identical_accuracies"] for r in rows) and all(r["speedup"] >= TARGET for r in resnet)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
