"""Overhead of the pruning environment over a bare evaluation forward pass.

For mnist5k LeNet-5 and mnist5k ResNet-20 (short pre-training: this measures the env, not
accuracy), in one run, medians over ``--reps`` repetitions of:

  (a) a bare evaluation forward pass over the reward-validation tensors (inference mode);
  (b) one env step with ``finetune_steps=0`` and evaluation caching OFF (every step evaluates);
  (c) one reset (after a full episode, so the dense weights really are restored).

(a) and (b) are interleaved so that machine-load drift hits both alike.

Prints the step overhead ``(b - a) / a`` (target <= 10%) and the ratio ``c / b`` (target <= 10%),
and writes ``bench_env.csv`` and ``bench_env.json`` to ``--output``.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_env.py [--reps 30] [--device cpu] [--output DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
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

from envs import PruningEnv  # noqa: E402
from purl.config import load_config  # noqa: E402
from purl.runtime import resolve_device  # noqa: E402
from purl.task import build_task  # noqa: E402

TASKS = {
    "mnist5k-lenet5": ["data.name=mnist5k", "model.name=lenet-5", "data.val_fraction=0.1",
                       "data.test_fraction=0.2", "pretrain.epochs=1", "pretrain.max_steps=40", "pretrain.lr=0.05",
                       "env.val_samples=500"],
    "mnist5k-resnet20": ["data.name=mnist5k", "model.name=resnet-20", "data.val_fraction=0.1",
                         "data.test_fraction=0.2", "pretrain.epochs=1", "pretrain.max_steps=20",
                         "env.val_samples=500"],
}
TARGET = 0.10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_task(label: str, overrides: list[str], device: torch.device, reps: int, cache_dir: str | None) -> dict:
    extra = [f"cache_dir={cache_dir}"] if cache_dir else []
    config = load_config(None, overrides + extra)
    task = build_task(config, device, progress=False)
    env = PruningEnv(config, task=task, device=device, finetune_steps=0, cache_evaluations=False,
                     action="sparsity-continuous", target_sparsity=0.9)
    model, x = env.model, env._x
    batch = config.data.eval_batch_size
    rng = np.random.default_rng(0)

    @torch.inference_mode()
    def bare_forward() -> None:
        for start in range(0, x.shape[0], batch):
            model(x[start:start + batch])
        _sync(device)

    # (a) and (b) interleaved, one bare forward then one step, walking whole episodes (every layer is
    # sampled); (c) on a twin env with evaluation caching on, so replaying its fixed episode is cheap:
    # each timed reset follows a full episode and really restores the dense weights.
    twin = PruningEnv(config, task=task, device=device, finetune_steps=0, cache_evaluations=True,
                      action="sparsity-continuous", target_sparsity=0.9)
    episode = [rng.uniform(-1.0, 1.0, size=(1,)).astype(np.float32) for _ in range(twin.n_steps)]
    forward_s: list[float] = []
    step_s: list[float] = []
    reset_s: list[float] = []
    eval_s: list[float] = []  # time of the evaluation inside each timed step
    inner: list[float] = []
    evaluate = env._evaluate

    def timed_evaluate() -> float:
        t = time.perf_counter()
        acc = evaluate()
        inner.append(time.perf_counter() - t)
        return acc

    env._evaluate = timed_evaluate  # type: ignore[method-assign]
    warmup = 2
    env.reset(seed=0)
    twin.reset(seed=0)
    for rep in range(reps + warmup):
        t0 = time.perf_counter()
        bare_forward()
        t1 = time.perf_counter()
        action = rng.uniform(-1.0, 1.0, size=(1,)).astype(np.float32)
        inner.clear()
        t2 = time.perf_counter()
        _, _, done, _, _ = env.step(action)
        _sync(device)
        t3 = time.perf_counter()
        if done:
            env.reset()
        for a in episode:
            twin.step(a)
        t4 = time.perf_counter()
        twin.reset()
        _sync(device)
        t5 = time.perf_counter()
        if rep >= warmup:
            forward_s.append(t1 - t0)
            step_s.append(t3 - t2)
            eval_s.append(sum(inner))
            reset_s.append(t5 - t4)
    a, b, c = (statistics.median(v) for v in (forward_s, step_s, reset_s))
    return {
        "task": label,
        "device": str(device),
        "layers": env.n_layers,
        "prunable_weights": env.total_weights,
        "val_samples": int(x.shape[0]),
        "reps": reps,
        "steps_timed": len(step_s),
        "forward_ms": a * 1e3,
        "step_ms": b * 1e3,
        "reset_ms": c * 1e3,
        "step_overhead": (b - a) / a,
        "step_overhead_paired": statistics.median((s - f) / f for s, f in zip(step_s, forward_s, strict=True)),
        "step_non_eval_ms": statistics.median(s - e for s, e in zip(step_s, eval_s, strict=True)) * 1e3,
        "reset_over_step": c / b,
        "overhead_ok": (b - a) / a <= TARGET,
        "reset_ok": c / b <= TARGET,
        "evaluations": env.evaluations,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="repetitions (>= 20); medians are reported")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"), help="directory for CSV/JSON")
    parser.add_argument("--cache-dir", default=None, help="dense-model cache (default: the config's)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args(argv)
    if args.reps < 20:
        parser.error("--reps must be >= 20")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [bench_task(name, TASKS[name], device, args.reps, args.cache_dir) for name in args.tasks]

    print(f"{'task':18} {'device':6} {'(a) fwd ms':>10} {'(b) step ms':>11} {'(c) reset ms':>12} "
          f"{'(b-a)/a':>8} {'paired':>7} {'non-eval ms':>11} {'c/b':>6}")
    for r in rows:
        print(f"{r['task']:18} {r['device']:6} {r['forward_ms']:10.3f} {r['step_ms']:11.3f} {r['reset_ms']:12.3f} "
              f"{r['step_overhead']:8.1%} {r['step_overhead_paired']:7.1%} {r['step_non_eval_ms']:11.3f} "
              f"{r['reset_over_step']:6.1%}  [step {'ok' if r['overhead_ok'] else 'OVER'}, "
              f"reset {'ok' if r['reset_ok'] else 'OVER'}]")
    print("(b-a)/a: medians as specified; paired: median of per-repetition (step - fwd) / fwd; non-eval: median"
          " time of a step outside its evaluation (the env's own work)")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench_env.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "threads": torch.get_num_threads(), "target": TARGET}
    (out / "bench_env.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {out / 'bench_env.csv'} and {out / 'bench_env.json'}")
    return 0 if all(r["overhead_ok"] and r["reset_ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
