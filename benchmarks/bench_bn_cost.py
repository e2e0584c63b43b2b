"""Per-step cost of BatchNorm recalibration in the env (ResNet-20, prefix cache on): auto vs off, same actions.

    .venv/bin/python benchmarks/bench_bn_cost.py
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from purl.config import load_config  # noqa: E402
from purl.envs import PruningEnv  # noqa: E402
from purl.task import build_task  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "mnist5k-resnet20.yaml", ["device=cpu"])
    task = build_task(cfg, torch.device("cpu"), progress=False)
    rng = np.random.default_rng(0)
    envs = {b: PruningEnv(cfg, task=task, action="sparsity-continuous", cache_evaluations=False,
                          bn_recalibration_batches=b) for b in (0, "auto")}
    times: dict = {b: [] for b in envs}
    for episode in range(3):  # the two envs alternate, so load drift hits both alike
        actions = [rng.uniform(-1, 1, 1).astype(np.float32) for _ in range(22)]
        for b, env in envs.items():
            env.reset(seed=episode)
            start = time.perf_counter()
            for action in actions:
                env.step(action)
            times[b].append((time.perf_counter() - start) / len(actions))
    for b, values in times.items():
        print(f"bn_recalibration_batches={b}: median {statistics.median(values):.3f} s/step")
    off, on = statistics.median(times[0]), statistics.median(times["auto"])
    print(f"recalibration cost per step: {on - off:.3f} s ({on / off - 1:+.0%})")


if __name__ == "__main__":
    main()
