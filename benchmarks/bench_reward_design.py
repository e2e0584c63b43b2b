"""Reward design: PuRL's per-step reward vs AMC's terminal reward, same agent, same budget.

For each model (mnist5k LeNet-5 / ResNet-20), agent (PPO with a continuous sparsity action,
DQN with ``env.action=sparsity-discrete``), reward (``purl`` per-step, ``amc`` terminal) and
seed, one agent is trained for the same number of env steps at 90% target sparsity with the
budget mode on (every episode ends at exactly 90%, so only the *allocation* differs). Per run:

* ``steps_to_near_best`` / ``wall_to_near_best_s``: env steps (and learning wall time) until the
  episode accuracy on the reward split first comes within ``--tolerance`` (default 0.005 =
  0.5 points) of the best episode accuracy that run reaches (from ``episodes.csv``);
* ``best_accuracy``: that best reward-split accuracy (percent);
* ``final_mean_accuracy``: mean reward-split accuracy of the last 10% of episodes (how good the
  policy itself became, as opposed to the best allocation it stumbled on);
* ``after_test_top1``: test top-1 of the reported allocation after the same fine-tuning as
  every baseline (:func:`agents.run_agent_method`).

Prints a table of medians over seeds per (model, agent, reward) and writes
``reward_design.csv`` (one row per run), ``reward_design_summary.csv``,
``reward_design_curves.csv`` (episode accuracy per run) and ``reward_design.png`` to ``--output``.
Finished runs are kept under ``--workdir`` and skipped on a re-run (``--fresh`` to redo them).

    python benchmarks/bench_reward_design.py [--models lenet5 resnet20] [--agents ppo dqn]
        [--seeds 0 1 2 resnet20=0,1] [--timesteps lenet5=600 resnet20=176] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    ROOT,
    build,
    log,
    markdown_table,
    median,
    per_model,
    pyplot,
    read_csv,
    set_threads,
    task_config,
    write_csv,
)

TARGET = 0.9
REWARDS = ("purl", "amc")
#: agent name -> config overrides (PPO: continuous sparsity action, or the Global-MP-relative action of the
#: shipped mnist5k configs; DQN: discrete sparsity grid)
AGENTS: dict[str, list[str]] = {
    "ppo": ["agent.algo=ppo", "env.action=sparsity-continuous",
            "agent.hyperparams={learning_rate: 0.001, n_epochs: 5}"],
    "ppo-prior": ["agent.algo=ppo", "env.action=prior-relative", "env.prior=global-mp",
                  "agent.hyperparams={learning_rate: 0.001, n_epochs: 5}"],
    "dqn": ["agent.algo=dqn", "env.action=sparsity-discrete", "agent.hyperparams={learning_rate: 0.001}"],
}
DEFAULT_TIMESTEPS = {"lenet5": 600, "resnet20": 176}
#: PPO rollout length per model (default: whole episodes, >= 128 steps). ResNet-20 episodes are 22
#: steps, so a short search needs short rollouts to get any PPO update at all.
PPO_ROLLOUT = {"resnet20": "agent.hyperparams={learning_rate: 0.001, n_epochs: 5, n_steps: 44, batch_size: 22}"}


def common_overrides(args: argparse.Namespace) -> list[str]:
    """Budget-reduced settings shared by every run (fine-tuning identical for all)."""
    return [f"env.target_sparsity={TARGET}", "env.budget=true", f"env.val_samples={args.val_samples}",
            f"finetune.epochs={args.finetune_epochs}", "agent.progress_bar=false", "agent.checkpoint_every=100000"]


def time_to_near_best(episodes: list[dict[str, str]], tolerance: float) -> dict[str, Any]:
    """First episode whose reward-split accuracy is within ``tolerance`` of the run's best."""
    accs = [float(e["accuracy"]) for e in episodes]
    if not accs:
        return {"best_accuracy": None, "steps_to_near_best": None, "wall_to_near_best_s": None,
                "episodes_to_near_best": None}
    best = max(accs)
    first = next(e for e, a in zip(episodes, accs, strict=True) if a >= best - tolerance - 1e-12)
    return {"best_accuracy": 100.0 * best, "steps_to_near_best": int(first["env_step"]),
            "wall_to_near_best_s": float(first["wall_time_s"]), "episodes_to_near_best": int(first["episode"])}


def run_one(task, model: str, agent: str, reward: str, seed: int, timesteps: int, args: argparse.Namespace,
            run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one agent, fine-tune its allocation, and return (summary row, episode curve)."""
    from purl.agents import run_agent_method

    done = run_dir / "bench_row.json"
    if done.is_file() and not args.fresh:
        row = json.loads(done.read_text())
    else:
        overrides = common_overrides(args) + AGENTS[agent] + [f"env.reward={reward}",
                                                              f"agent.total_timesteps={timesteps}"]
        if agent.startswith("ppo") and model in PPO_ROLLOUT:
            overrides.append(PPO_ROLLOUT[model])
        config = task_config(model, overrides, device=args.device, cache_dir=args.cache_dir)
        start = time.perf_counter()
        result = run_agent_method(task, config, output_dir=run_dir, seed=seed, progress=False)
        episodes = read_csv(run_dir / "episodes.csv")
        row = {"model": model, "agent": agent, "reward": reward, "seed": seed, "timesteps": timesteps,
               "episodes": len(episodes), "episode_length": int(episodes[0]["env_step"]) if episodes else None,
               **time_to_near_best(episodes, args.tolerance),
               "search_wall_s": float(result["search_wall_time_s"]),
               "policy_source": result["policy_source"],
               "achieved_sparsity": float(result["achieved_sparsity"]),
               "before_test_top1": float(result["before_test_top1"]),
               "after_test_top1": float(result["after_test_top1"]),
               "dense_test_top1": float(result["dense_test_top1"]),
               "n_collapsed": int(result["n_collapsed"]),
               "run_wall_s": time.perf_counter() - start}
        done.write_text(json.dumps(row, indent=1))
    curve = [{"model": model, "agent": agent, "reward": reward, "seed": seed, "episode": int(e["episode"]),
              "env_step": int(e["env_step"]), "accuracy": round(100.0 * float(e["accuracy"]), 3),
              "wall_time_s": float(e["wall_time_s"])}
             for e in read_csv(run_dir / "episodes.csv")]
    tail = curve[-max(1, len(curve) // 10):]  # how good the policy itself became, not just the best find
    row["final_mean_accuracy"] = sum(c["accuracy"] for c in tail) / len(tail) if tail else None
    return row, curve


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over seeds per (model, agent, reward)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["agent"], r["reward"]), []).append(r)
    out = []
    for (model, agent, reward), rs in groups.items():
        out.append({"model": model, "agent": agent, "reward": reward, "seeds": len(rs),
                    "timesteps": rs[0]["timesteps"], "episode_length": rs[0]["episode_length"],
                    **{k: median(r[k] for r in rs) for k in ("steps_to_near_best", "wall_to_near_best_s",
                                                             "best_accuracy", "final_mean_accuracy",
                                                             "after_test_top1",
                                                             "before_test_top1", "search_wall_s", "run_wall_s")}})
    return out


def plot(curves: list[dict[str, Any]], path: Path) -> None:
    """Best-so-far and smoothed episode accuracy vs env steps, mean over seeds, purl vs amc."""
    import numpy as np

    plt = pyplot()
    panels = sorted({(c["model"], c["agent"]) for c in curves})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (model, agent) in zip(axes[0], panels, strict=True):
        for reward, colour in zip(REWARDS, ("tab:blue", "tab:red"), strict=True):
            runs: dict[int, list[dict[str, Any]]] = {}
            for c in curves:
                if (c["model"], c["agent"], c["reward"]) == (model, agent, reward):
                    runs.setdefault(c["seed"], []).append(c)
            if not runs:
                continue
            end = min(max(c["env_step"] for c in r) for r in runs.values())
            grid = np.linspace(0, end, 100)
            best, smooth = [], []
            for r in runs.values():
                steps = np.array([c["env_step"] for c in r])
                acc = np.array([c["accuracy"] for c in r])
                window = max(1, len(acc) // 10)
                rolled = np.convolve(acc, np.ones(window) / window, mode="valid")
                best.append(np.interp(grid, steps, np.maximum.accumulate(acc)))
                smooth.append(np.interp(grid, steps[window - 1:], rolled))
            ax.plot(grid, np.mean(best, axis=0), color=colour, label=f"{reward}: best so far",
                    lw=3.0 if reward == "purl" else 1.3, alpha=0.6 if reward == "purl" else 1.0)
            ax.plot(grid, np.mean(smooth, axis=0), color=colour, ls=":", label=f"{reward}: episode (rolling)")
        n_seeds = len({c["seed"] for c in curves if (c["model"], c["agent"]) == (model, agent)})
        ax.set_title(f"{model} / {agent} @ {TARGET:.0%} sparsity ({n_seeds} seeds)")
        ax.set_xlabel("env steps")
        ax.set_ylabel("reward-split accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("PuRL per-step vs AMC terminal reward (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_seeds(values: list[str], models: list[str]) -> dict[str, list[int]]:
    """``--seeds 0 1 2`` (all models), optionally with ``MODEL=0,1`` entries for one model."""
    default = [int(v) for v in values if "=" not in v] or [0, 1, 2]
    out = dict.fromkeys(models, default)
    for value in values:
        if "=" in value:
            key, _, seeds = value.partition("=")
            out[key] = [int(x) for x in seeds.split(",") if x]
    return out


def parse_timesteps(values: list[str], models: list[str]) -> dict[str, int]:
    """``--timesteps 600`` (all models) or ``--timesteps lenet5=600 resnet20=176``."""
    return per_model(values, {m: DEFAULT_TIMESTEPS.get(m, 600) for m in models}, models)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet5", "resnet20"], choices=["lenet5", "resnet20"])
    parser.add_argument("--agents", nargs="+", default=["ppo", "dqn"], choices=list(AGENTS))
    parser.add_argument("--rewards", nargs="+", default=list(REWARDS), choices=list(REWARDS))
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"],
                        help="seeds for all models, plus optional MODEL=0,1 entries (e.g. 0 1 2 resnet20=0,1)")
    parser.add_argument("--timesteps", nargs="*", default=[],
                        help="env steps per run: N for all models or MODEL=N (default lenet5=600 resnet20=176)")
    parser.add_argument("--val-samples", type=int, default=256, help="reward-split images per evaluation")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=0.005, help="near-best margin (fraction)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    parser.add_argument("--cache-dir", default=None, help="dense-model cache (default: the config's)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench_reward_design")
    parser.add_argument("--fresh", action="store_true", help="re-run runs already finished in --workdir")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    timesteps = parse_timesteps(args.timesteps, args.models)
    seeds = parse_seeds(args.seeds, args.models)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    total = sum(len(seeds[m]) for m in args.models) * len(args.agents) * len(args.rewards)
    for model in args.models:
        task = build(task_config(model, common_overrides(args), device=args.device, cache_dir=args.cache_dir))
        for agent in args.agents:
            for seed in seeds[model]:
                for reward in args.rewards:
                    run_dir = args.workdir / f"{model}-{agent}-{reward}-seed{seed}-T{timesteps[model]}"
                    row, curve = run_one(task, model, agent, reward, seed, timesteps[model], args, run_dir)
                    rows.append(row)
                    curves += curve
                    log(f"[{len(rows)}/{total}] {model} {agent} {reward} seed {seed}: "
                        f"near-best at step {row['steps_to_near_best']} ({row['wall_to_near_best_s']:.1f}s), "
                        f"best reward-split acc {row['best_accuracy']:.2f}%, test top-1 after FT "
                        f"{row['after_test_top1']:.2f}% (run {row['run_wall_s']:.0f}s)")
    summary = summarise(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    write_csv(args.output / "reward_design.csv", rows)
    write_csv(args.output / "reward_design_summary.csv", summary)
    write_csv(args.output / "reward_design_curves.csv", curves)
    plot(curves, args.output / "reward_design.png")
    print()
    print(f"Medians over seeds {seeds}; target sparsity {TARGET}, budget mode on; "
          f"near-best = within {100 * args.tolerance:.1f} points of the run's best reward-split accuracy")
    print(markdown_table(summary, [
        ("model", "model"), ("agent", "agent"), ("reward", "reward"), ("timesteps", "env steps"),
        ("episode_length", "steps/episode"), ("steps_to_near_best", "steps to near-best"),
        ("wall_to_near_best_s", "wall to near-best (s)"), ("best_accuracy", "best reward-split acc (%)"),
        ("final_mean_accuracy", "last-10% episodes mean acc (%)"),
        ("after_test_top1", "test top-1 after FT (%)"), ("run_wall_s", "run wall (s)")]))
    print(f"\nwrote {args.output}/reward_design{{.csv,_summary.csv,_curves.csv,.png}}; "
          f"total wall time {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
