"""Benchmark: our Global MP vs ``torch.nn.utils.prune.global_unstructured`` on ResNet-50 (CPU).

Run ``python benchmarks/bench_global_mp.py [--sparsity 0.9] [--repeats 5] [--threads N] [--contend [N]]
[--output DIR]``.

``--contend [N]`` repeats all timings while N (default 1) extra processes spin on a core each (a pure-Python
busy loop in a subprocess, killed afterwards) and prints the quiet and contended medians and ratios side by
side: Global MP must stay fast next to a busy neighbour (target >= 25x torch in both).

Measures, side by side in one process (medians over at least 5 repeats; every (c) run and every (b)
run is paired with (a) runs right around it, so that both see the same machine load; the ratio of
medians is the headline figure, the median of the paired ratios and the best-of ratio are printed
too because wall times on a shared machine are noisy):

(a) ``baselines.global_magnitude_prune(model, s)``: threshold selection + zeroing the pruned weights
    in place (the model is restored to dense, untimed, before each repeat);
(b) ``prune.global_unstructured(params, L1Unstructured, amount=s)`` on a deepcopy (the copy and the
    ``prune.remove`` afterwards are untimed);
(c) one elementwise pass ``sum(w.abs().sum() for w in weights)``.

Also reports mask agreement of (a) with (b) (fraction of identical mask entries, and the number of
weights tied with the threshold, the only place where they may legitimately differ), and the peak
extra memory of (a): in a fresh subprocess, after ``malloc_trim``, the kernel's peak-RSS counter is
reset (``/proc/self/clear_refs`` = 5) and ``VmHWM - VmRSS`` is read after one call (Linux only;
counts every allocation of the process, torch's included). Results go to ``--output`` as CSV + JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import ctypes
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# GNU OpenMP busy-waits by default: on a shared, oversubscribed machine every parallel region then
# stalls whenever a worker thread is descheduled, and timings of all three measurements become
# erratic. Waiting passively fixes that; it must be set before torch starts its thread pool.
# Override with OMP_WAIT_POLICY=ACTIVE in the environment to measure the default behaviour.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.utils.prune as torch_prune  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from purl.baselines import _select, global_magnitude_prune  # noqa: E402
from purl.pruning import MaskState, find_prunable_layers  # noqa: E402

TARGETS = {"speedup_vs_torch": 25.0, "cost_in_elementwise_passes": 20.0, "peak_memory_x": 2.0}


def build_model(seed: int) -> nn.Module:
    """ResNet-50 (random init) with every conv/linear weight redrawn ~ N(0, 2/fan_in)."""
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    model = resnet50(weights=None).eval()
    with torch.no_grad():
        for layer in find_prunable_layers(model):
            w = layer.weight
            fan_in = w[0].numel()
            w.normal_(0.0, math.sqrt(2.0 / fan_in))
    return model


#: A competing process: one pure-Python busy loop keeps one core fully busy (no torch, no threads).
_SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def contender(processes: int = 1, seconds: float = 3600.0):  # type: ignore[no-untyped-def]
    """Keep ``processes`` cores busy with spinning subprocesses for the block (killed on exit, even on error)."""
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN.format(seconds=seconds)]) for _ in range(processes)]
    try:
        time.sleep(0.5)  # let them get scheduled
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure_memory_child(sparsity: float, seed: int) -> None:
    """Run in a subprocess: print JSON with the peak extra resident memory of one Global MP call."""
    model = build_model(seed)
    weights = [layer.weight for layer in find_prunable_layers(model)]
    weight_bytes = sum(w.numel() * w.element_size() for w in weights)
    with contextlib.suppress(OSError):  # hand freed heap back to the OS so RSS starts low
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _status("VmRSS")
    global_magnitude_prune(model, sparsity)
    peak = _status("VmHWM")
    print(json.dumps({"peak_extra_bytes": peak - before, "weight_bytes": weight_bytes}))


def measure_memory(sparsity: float, seed: int) -> dict[str, float] | None:
    if platform.system() != "Linux":
        return None
    cmd = [sys.executable, __file__, "--memory-child", "--sparsity", str(sparsity), "--seed", str(seed),
           "--threads", str(torch.get_num_threads())]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        print(f"memory measurement failed: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for all three measurements (default: torch's default)")
    parser.add_argument("--contend", type=int, nargs="?", const=1, default=0, metavar="N",
                        help="also measure with N (default 1) competing busy processes and print both ratios")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        measure_memory_child(args.sparsity, args.seed)
        return 0
    repeats = max(args.repeats, 5)
    s = args.sparsity

    model = build_model(args.seed)
    layers = find_prunable_layers(model)
    weights = [layer.weight.detach() for layer in layers]
    n_weights = sum(w.numel() for w in weights)
    dense = [w.clone() for w in weights]
    dense_model = copy.deepcopy(model)

    def restore() -> None:
        for w, d in zip(weights, dense, strict=True):
            w.copy_(d)

    # warm-up (first-touch page faults, lazy init)
    global_magnitude_prune(model, s)
    restore()
    sum(w.abs().sum() for w in weights)

    def run_ours() -> float:
        t = timed(lambda: global_magnitude_prune(model, s))
        restore()
        return t

    def run_pass() -> float:
        return timed(lambda: sum(w.abs().sum() for w in weights))

    def phase() -> dict[str, list[float]]:
        """Timings of (a), (b), (c) under the current machine load (paired as described above)."""
        t_ours, t_pass, pairs_ac = [], [], []
        for _ in range(repeats):  # (a) and (c) interleaved; each (a) paired with the mean of the (c) around it
            before, ours, after = run_pass(), run_ours(), run_pass()
            t_ours.append(ours)
            t_pass += [before, after]
            pairs_ac.append(ours / ((before + after) / 2))
        t_torch, pairs_ba = [], []
        for _ in range(repeats):
            copy_model = copy.deepcopy(dense_model)
            params = [(layer.module, "weight") for layer in find_prunable_layers(copy_model)]
            ours_before = run_ours()
            t_torch.append(
                timed(lambda params=params: torch_prune.global_unstructured(
                    params, pruning_method=torch_prune.L1Unstructured, amount=s))
            )
            ours_after = run_ours()
            t_ours += [ours_before, ours_after]
            pairs_ba.append(t_torch[-1] / ((ours_before + ours_after) / 2))
            copy_layers = find_prunable_layers(copy_model)
            if not torch_masks:
                torch_masks.update({layer.name: layer.module.weight_mask.bool().clone() for layer in copy_layers})
            for layer in copy_layers:
                torch_prune.remove(layer.module, "weight")
            del copy_model, params, copy_layers
        return {"ours": t_ours, "torch": t_torch, "pass": t_pass, "pairs_ac": pairs_ac, "pairs_ba": pairs_ba,
                "load": [os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan],
                "select_threads": [float(_select.choose_threads(n_weights))]}

    torch_masks: dict[str, torch.Tensor] = {}
    phases = {"quiet": phase()}
    if args.contend:
        with contender(args.contend):
            phases["contended"] = phase()
    t = phases["quiet"]
    t_ours, t_torch, t_pass, pairs_ac, pairs_ba = t["ours"], t["torch"], t["pass"], t["pairs_ac"], t["pairs_ba"]

    # mask agreement (ours through a MaskState, on the dense model); the in-place path must agree too
    restore()
    global_magnitude_prune(model, s)
    in_place_nonzero = [w != 0 for w in weights]
    restore()
    masks = MaskState(model)
    result = global_magnitude_prune(model, s, masks=masks)
    same = sum(int((masks.masks[name] == torch_masks[name]).sum()) for name in masks.names)
    threshold = result.info.get("threshold")
    ties = sum(int((d.abs() == threshold).sum()) for d in dense) if threshold is not None else 0
    differ = n_weights - same
    in_place_ok = all(
        torch.equal(nz, masks.masks[layer.name] & (d != 0))
        for layer, d, nz in zip(layers, dense, in_place_nonzero, strict=True)
    )
    del in_place_nonzero
    restore()

    memory = measure_memory(s, args.seed)

    med_ours, med_torch, med_pass = (statistics.median(t) for t in (t_ours, t_torch, t_pass))
    weight_bytes = sum(w.numel() * w.element_size() for w in weights)
    row = {
        "model": "resnet50",
        "sparsity": s,
        "prunable_weights": n_weights,
        "layers": len(layers),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "repeats": repeats,
        "ours_ms": med_ours * 1e3,
        "torch_global_unstructured_ms": med_torch * 1e3,
        "elementwise_pass_ms": med_pass * 1e3,
        "speedup_vs_torch": med_torch / med_ours,
        "cost_in_elementwise_passes": med_ours / med_pass,
        "speedup_vs_torch_paired_median": statistics.median(pairs_ba),
        "cost_in_elementwise_passes_paired_median": statistics.median(pairs_ac),
        "speedup_vs_torch_best": min(t_torch) / min(t_ours),
        "cost_in_elementwise_passes_best": min(t_ours) / min(t_pass),
        "runs_ours": len(t_ours),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "mask_agreement": same / n_weights,
        "mask_entries_differing": differ,
        "weights_tied_at_threshold": ties,
        "in_place_matches_masks": in_place_ok,
        "pruned": result.pruned,
        "pruned_target": round(s * n_weights),
        "peak_extra_bytes": memory["peak_extra_bytes"] if memory else None,
        "prunable_weight_bytes": weight_bytes,
        "peak_memory_x": memory["peak_extra_bytes"] / weight_bytes if memory else None,
        "memory_method": "subprocess: reset VmHWM via /proc/self/clear_refs, report VmHWM - VmRSS around one call",
        "torch": torch.__version__,
        "select_threads": int(t["select_threads"][0]),
        "contenders": args.contend,
    }
    for name, times in phases.items():
        if name == "quiet":
            continue
        mo, mt, mp = (statistics.median(times[key]) for key in ("ours", "torch", "pass"))
        row.update({
            f"{name}_ours_ms": mo * 1e3,
            f"{name}_torch_global_unstructured_ms": mt * 1e3,
            f"{name}_elementwise_pass_ms": mp * 1e3,
            f"{name}_speedup_vs_torch": mt / mo,
            f"{name}_cost_in_elementwise_passes": mo / mp,
            f"{name}_speedup_vs_torch_paired_median": statistics.median(times["pairs_ba"]),
            f"{name}_load_average_1min": times["load"][0],
            f"{name}_select_threads": int(times["select_threads"][0]),
        })

    args.output.mkdir(parents=True, exist_ok=True)
    stem = "bench_global_mp" if args.threads is None else f"bench_global_mp_threads{args.threads}"
    stem += "_contend" if args.contend else ""
    (args.output / f"{stem}.json").write_text(json.dumps(row, indent=2) + "\n")
    with open(args.output / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)

    def verdict(key: str, higher_is_better: bool) -> str:
        value = row[key]
        if value is None:
            return "n/a"
        ok = value >= TARGETS[key] if higher_is_better else value <= TARGETS[key]
        return "PASS" if ok else "MISS"

    print(f"ResNet-50, {n_weights:,} prunable weights in {len(layers)} layers, sparsity {s}, "
          f"{torch.get_num_threads()} threads, medians of {len(t_ours)}/{repeats}/{len(t_pass)} runs of (a)/(b)/(c), "
          f"OMP_WAIT_POLICY={row['omp_wait_policy']}, load average {row['load_average_1min']:.1f}")
    print(f"{'measure':44s} {'value':>14s}  target")
    print(f"{'(a) ours: global_magnitude_prune':44s} {med_ours * 1e3:11.1f} ms")
    print(f"{'(b) torch prune.global_unstructured':44s} {med_torch * 1e3:11.1f} ms")
    print(f"{'(c) one pass sum(|w|)':44s} {med_pass * 1e3:11.1f} ms")
    print(f"{'(b)/(a) speed-up vs torch':44s} {row['speedup_vs_torch']:13.1f}x  >= 25x  "
          f"{verdict('speedup_vs_torch', True)}  (paired median {row['speedup_vs_torch_paired_median']:.1f}x, "
          f"best-of {row['speedup_vs_torch_best']:.1f}x)")
    print(f"{'(a)/(c) cost in elementwise passes':44s} {row['cost_in_elementwise_passes']:13.1f}x  <= 20x  "
          f"{verdict('cost_in_elementwise_passes', False)}  (paired median "
          f"{row['cost_in_elementwise_passes_paired_median']:.1f}x, best-of "
          f"{row['cost_in_elementwise_passes_best']:.1f}x)")
    print(f"{'mask agreement with torch':44s} {row['mask_agreement']:14.8f}  "
          f"({differ} entries differ; {ties} weights tied at the threshold)")
    print(f"{'exact count':44s} {result.pruned:>14,}  (target {row['pruned_target']:,})")
    if memory:
        print(f"{'(a) peak extra memory / prunable weight bytes':44s} {row['peak_memory_x']:13.2f}x  <= 2x   "
              f"{verdict('peak_memory_x', False)}  ({memory['peak_extra_bytes'] / 2**20:.1f} MiB "
              f"vs {weight_bytes / 2**20:.1f} MiB)")
    else:
        print("peak memory: not measured (needs Linux /proc)")
    if args.contend:
        print(f"\nside by side (medians; 'contended' = {args.contend} extra busy process(es) spinning; "
              "'quiet' = no extra process, whatever else the machine runs):")
        print(f"{'phase':10s} {'(a) ours ms':>12s} {'(b) torch ms':>13s} {'(c) pass ms':>12s} "
              f"{'(b)/(a)':>9s} {'paired':>8s} {'(a)/(c)':>8s} {'sel.thr':>8s} {'load1':>6s}  target (b)/(a) >= 25x")
        for name, times in phases.items():
            mo, mt, mp = (statistics.median(times[key]) for key in ("ours", "torch", "pass"))
            ratio = mt / mo
            print(f"{name:10s} {mo * 1e3:12.1f} {mt * 1e3:13.1f} {mp * 1e3:12.1f} {ratio:8.1f}x "
                  f"{statistics.median(times['pairs_ba']):7.1f}x {mo / mp:7.1f}x {int(times['select_threads'][0]):8d} "
                  f"{times['load'][0]:6.1f}  {'PASS' if ratio >= TARGETS['speedup_vs_torch'] else 'MISS'}")
    print(f"results written to {args.output}/{stem}.{{json,csv}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
