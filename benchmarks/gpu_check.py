"""GPU check: the CUDA code paths of PuRL in one script (about 2-4 minutes on one GPU).

    python benchmarks/gpu_check.py                       # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --dry-run  # anywhere: every part's code path, small and fast

Parts (each timed, each a PASS/FAIL line; CUDA work is synchronised at the end of a part so that an
asynchronous CUDA error is reported by the part that caused it):

1. ``global-mp``: Global MP vs ``torch.nn.utils.prune.global_unstructured`` on ResNet-50 on the device
   (medians, speed-up, exact count, mask agreement with torch);
2. ``env``: ``PruningEnv`` steps/s on the device vs on CPU (mnist5k ResNet-20, as ``bench_env.py``);
3. ``amp-finetune``: one masked fine-tuning epoch (``purl.training.train``) with AMP on the device; checks
   that autocast really ran in float16 on CUDA, that the loss is finite and that pruned weights stayed zero;
4. ``compare``: ``purl compare --config configs/quick.yaml --device <device>`` in a subprocess, its table
   printed.

Exit status: 0 when every part passed; 1 when any part failed (its error and traceback are printed);
2 when CUDA was asked for and no CUDA device is present (one line says so). ``--dry-run`` shrinks every
part (small model, one episode, few samples, a one-cell compare) so it runs in well under a minute on CPU.
Everything is written under a temporary work directory (dense-model cache, compare output), removed after.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.utils.prune as torch_prune  # noqa: E402
from torch import nn  # noqa: E402

EXIT_FAILED = 1
EXIT_NO_CUDA = 2
COMPARE_TIMEOUT_S = 240


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------ parts
def _small_model() -> nn.Module:
    """~0.6 M weights: above the exact-selection cutoff, so Global MP takes its sampling path too."""
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 128, 3), nn.Conv2d(128, 256, 3), nn.Flatten(),
                          nn.Linear(256, 1000))
    with torch.no_grad():  # He init, as bench_global_mp's ResNet-50: no layer collapses at 90 %
        for m in model:
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.normal_(0.0, math.sqrt(2.0 / m.weight[0].numel()))
    return model


def part_global_mp(device: torch.device, dry_run: bool, workdir: Path) -> str:
    """Global MP vs torch.prune.global_unstructured on ResNet-50 (dry run: a small conv net)."""
    from purl.baselines import global_magnitude_prune
    from purl.pruning import MaskState, find_prunable_layers

    if dry_run:
        torch.manual_seed(0)
        model, label, repeats = _small_model(), "small conv net", 2
    else:
        from benchmarks.bench_global_mp import build_model

        model, label, repeats = build_model(0), "ResNet-50", 5
    model = model.to(device)
    weights = [layer.weight.detach() for layer in find_prunable_layers(model)]
    dense = [w.clone() for w in weights]
    n = sum(w.numel() for w in weights)
    s = 0.9

    def restore() -> None:
        for w, d in zip(weights, dense, strict=True):
            w.copy_(d)

    global_magnitude_prune(model, s)  # warm-up (CUDA context, kernels)
    restore()
    ours = []
    for _ in range(repeats):
        ours.append(_timed(lambda: global_magnitude_prune(model, s), device))
        restore()
    theirs, torch_masks = [], {}
    for _ in range(max(1, repeats // 2)):
        copy_model = copy.deepcopy(model)
        params = [(layer.module, "weight") for layer in find_prunable_layers(copy_model)]
        theirs.append(_timed(lambda params=params: torch_prune.global_unstructured(
            params, pruning_method=torch_prune.L1Unstructured, amount=s), device))
        torch_masks = {layer.name: layer.module.weight_mask.bool() for layer in find_prunable_layers(copy_model)}
        del copy_model, params
    masks = MaskState(model)
    result = global_magnitude_prune(model, s, masks=masks)
    same = sum(int((masks.masks[name] == torch_masks[name]).sum()) for name in masks.names)
    _sync(device)
    if result.pruned != round(s * n):
        raise AssertionError(f"Global MP pruned {result.pruned} weights instead of {round(s * n)}")
    if masks.masks[masks.names[0]].device.type != device.type:
        raise AssertionError(f"masks are on {masks.masks[masks.names[0]].device}, expected {device}")
    a, b = statistics.median(ours), statistics.median(theirs)
    return (f"{label} on {device}, {n:,} weights, sparsity {s}: ours {a * 1e3:.1f} ms, torch "
            f"{b * 1e3:.1f} ms, speed-up {b / a:.1f}x; exact count {result.pruned:,}; mask agreement "
            f"{same / n:.6f}")


def _env_steps_per_s(device: torch.device, dry_run: bool, cache_dir: Path) -> tuple[float, bool]:
    from benchmarks.bench_env import TASKS
    from purl.config import load_config
    from purl.envs import PruningEnv
    from purl.task import build_task

    overrides = list(TASKS["mnist5k-resnet20"]) + [f"cache_dir={cache_dir}"]
    if dry_run:
        overrides += ["env.val_samples=64"]
    config = load_config(None, overrides)
    task = build_task(config, device, progress=False)
    env = PruningEnv(config, task=task, device=device, finetune_steps=0, cache_evaluations=False,
                     action="sparsity-continuous", target_sparsity=0.9)
    import numpy as np

    rng = np.random.default_rng(0)
    # dry run: one untimed-warm-up-free partial episode (the code path, not the speed)
    warmup, episodes, steps = (0, 1, min(4, env.n_steps)) if dry_run else (1, 3, env.n_steps)
    times, finite = [], True
    for episode in range(warmup + episodes):
        env.reset(seed=episode)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            _, reward, _, _, info = env.step(rng.uniform(-1.0, 1.0, size=(1,)).astype(np.float32))
            finite &= math.isfinite(float(reward)) and math.isfinite(float(info["accuracy"]))
        _sync(device)
        if episode >= warmup:
            times.append(steps / (time.perf_counter() - start))
    return statistics.median(times), finite


def part_env(device: torch.device, dry_run: bool, workdir: Path) -> str:
    """PruningEnv steps/s on the device vs CPU (mnist5k ResNet-20)."""
    on_device, ok_device = _env_steps_per_s(device, dry_run, workdir / "cache")
    if device.type == "cpu":  # the dry run on CPU: the same measurement twice would only cost time
        on_cpu, ok_cpu = on_device, ok_device
    else:
        on_cpu, ok_cpu = _env_steps_per_s(torch.device("cpu"), dry_run, workdir / "cache")
    if not (ok_device and ok_cpu):
        raise AssertionError("an env step returned a non-finite reward or accuracy")
    return (f"ResNet-20 env steps/s: {device} {on_device:.1f}, cpu {on_cpu:.1f} "
            f"({on_device / on_cpu:.2f}x)")


def part_amp_finetune(device: torch.device, dry_run: bool, workdir: Path) -> str:
    """One masked fine-tuning epoch with AMP (CUDA only; float32 on CPU) after Global MP at 90 %."""
    from benchmarks.bench_env import TASKS
    from purl.baselines import get_allocator
    from purl.config import load_config
    from purl.task import build_task
    from purl.training import evaluate, train

    overrides = list(TASKS["mnist5k-resnet20"]) + [f"cache_dir={workdir / 'cache'}", "finetune.epochs=1",
                                                   "finetune.amp=true"]
    if dry_run:
        overrides += ["finetune.max_steps=3"]
    config = load_config(None, overrides)
    task = build_task(config, device, progress=False)
    model, masks = task.fresh_copy()
    get_allocator("global-mp").prune(masks, 0.9)
    dtypes: set[torch.dtype] = set()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    hook = first_conv.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype) if model.training else None)
    try:
        result = train(model, task.loader("train", seed=0), config.finetune, device=device, masks=masks,
                       progress=False, desc="amp-finetune")
    finally:
        hook.remove()
    acc = evaluate(model, task.loader("test"), device=device)
    _sync(device)
    if not math.isfinite(result.final_loss):
        raise AssertionError(f"fine-tuning loss is not finite: {result.final_loss}")
    leaked = sum(int((layer.weight.detach()[~masks.masks[layer.name]] != 0).sum()) for layer in masks.layers)
    if leaked:
        raise AssertionError(f"{leaked} pruned weights became non-zero during fine-tuning")
    expect = torch.float16 if device.type == "cuda" else torch.float32
    if dtypes != {expect}:
        raise AssertionError(f"training forward ran in {sorted(map(str, dtypes))}, expected {expect} "
                             f"({'AMP' if device.type == 'cuda' else 'no AMP on CPU'})")
    return (f"{result.steps} steps in {result.seconds:.1f}s ({result.steps / max(result.seconds, 1e-9):.1f} "
            f"steps/s), forward dtype {expect}, final loss {result.final_loss:.3f}, test top-1 "
            f"{100 * acc.top1:.2f}%, pruned weights stayed zero")


def part_compare(device: torch.device, dry_run: bool, workdir: Path) -> str:
    """``purl compare --config configs/quick.yaml --device <device>`` in a subprocess; prints its table."""
    out = workdir / "compare"
    cmd = [sys.executable, "-m", "purl.cli.main", "compare", "--config", str(ROOT / "configs" / "quick.yaml"),
           "--device", str(device), "--output", str(out), "--quiet", f"cache_dir={workdir / 'cache'}"]
    if dry_run:
        cmd += ["compare.methods=[global-mp,agent]", "compare.sparsities=[0.9]", "pretrain.epochs=1",
                "finetune.epochs=1", "agent.total_timesteps=64", "agent.hyperparams.n_steps=32",
                "agent.hyperparams.batch_size=32", "agent.hyperparams.n_epochs=1", "agent.checkpoint_every=64"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=COMPARE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"purl compare did not finish within {COMPARE_TIMEOUT_S}s") from exc
    print(proc.stdout.rstrip())
    if proc.returncode != 0:
        raise AssertionError(f"purl compare exited {proc.returncode}:\n{proc.stderr.rstrip()[-4000:]}")
    results = out / "results.csv"
    if not results.is_file():
        raise AssertionError(f"purl compare wrote no {results}")
    rows = results.read_text().strip().splitlines()
    return f"purl compare on {device}: {len(rows) - 1} result row(s) in {results.name}"


PARTS: dict[str, Callable[[torch.device, bool, Path], str]] = {
    "global-mp": part_global_mp,
    "env": part_env,
    "amp-finetune": part_amp_finetune,
    "compare": part_compare,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --dry-run)")
    parser.add_argument("--dry-run", action="store_true",
                        help="small and fast versions of every part (checks the code paths, not the GPU)")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
              "torch.cuda.is_available() is False); run it on a GPU machine, or use --device cpu --dry-run "
              "to check the code paths", file=sys.stderr)
        return EXIT_NO_CUDA
    if args.device not in ("cpu", "cuda") and not (args.device.startswith("cuda:") and args.device[5:].isdigit()):
        print(f"gpu_check: unknown device '{args.device}'; allowed: cuda, cuda:N, cpu", file=sys.stderr)
        return EXIT_FAILED
    device = torch.device(args.device)
    if device.type == "cuda":
        if device.index is not None and device.index >= torch.cuda.device_count():
            print(f"gpu_check: device '{args.device}' does not exist; this machine has "
                  f"{torch.cuda.device_count()} GPU(s)", file=sys.stderr)
            return EXIT_NO_CUDA
        torch.cuda.set_device(device)
        print(f"gpu_check: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    elif not args.dry_run:
        print("gpu_check: --device cpu without --dry-run measures nothing useful; running the full parts on CPU "
              "anyway (slow)", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="purl-gpu-check-"))
    failures: list[str] = []
    start_all = time.perf_counter()
    try:
        for name in args.parts:
            print(f"\n== {name} ==", flush=True)
            start = time.perf_counter()
            try:
                summary = PARTS[name](device, args.dry_run, workdir)
                print(f"PASS {name} ({time.perf_counter() - start:.1f}s): {summary}", flush=True)
            except Exception as exc:  # noqa: BLE001 - every failure (CUDA errors first) must be reported loudly
                traceback.print_exc()
                print(f"FAIL {name} ({time.perf_counter() - start:.1f}s): {type(exc).__name__}: {exc}", flush=True)
                failures.append(name)
                if device.type == "cuda" and "CUDA" in str(exc):
                    print("gpu_check: a CUDA error leaves the context unusable; stopping", file=sys.stderr)
                    break
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - start_all
    if failures:
        print(f"\ngpu_check: FAILED parts: {', '.join(failures)} ({total:.0f}s)", file=sys.stderr)
        return EXIT_FAILED
    print(f"\ngpu_check: all {len(args.parts)} parts passed on {device}{' (dry run)' if args.dry_run else ''} "
          f"in {total:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
