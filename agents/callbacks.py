"""What happens around SB3's learning loop: per-episode logging, best-policy tracking, checkpoints.

:class:`PurlCallback` watches the ``info["purl_episode"]`` summary every PuRL
environment emits when an episode ends (one pruning allocation of the whole
network) and

* logs it to TensorBoard through SB3's logger (``purl/episode_reward``,
  ``purl/reward/<component>``, ``purl/final_accuracy``, ``purl/global_sparsity``,
  ``purl/flops``; every ``figure_every`` episodes and at the end, bar charts of the
  latest and best episode's per-layer sparsity as ``purl/layer_sparsity_latest``
  / ``purl/layer_sparsity_best``; the best-return episode stands in for the best
  while no episode meets the target), at x = env steps so far;
* appends it to ``episodes.csv`` (learning curves for reports);
* keeps the *best* episode: the highest return among episodes that meet the
  target (``meets_target``: the target sparsity by the env's count rule,
  :func:`reaches_target`; and, only when ``env.target_accuracy`` is set
  explicitly, ``meets_accuracy_target`` too), saving the policy at that moment
  to ``best_model.zip`` and the allocation to ``best_episode.json``; and the
  *best-return* episode: the highest return among episodes that reach the
  target sparsity (kept in ``last.json``);
* stops the search at exactly ``budget`` env steps (:func:`planned_steps`:
  ``agent.total_timesteps``, rounded up to whole rollouts as SB3 does): SB3
  only checks its budget between rollouts, so a run resumed from a checkpoint
  taken mid-rollout (Ctrl-C) would otherwise overshoot by up to one rollout; a
  rollout that ends exactly at the budget still ends normally (and is learnt
  from), so an uninterrupted run is unchanged;
* every ``checkpoint_every`` env steps writes ``checkpoints/last.zip`` (plus
  ``checkpoints/last_replay_buffer.pkl`` for off-policy algorithms) and
  ``checkpoints/last.json`` (num_timesteps, episodes, evaluations, wall time,
  best so far, and the run's config and seed, so a resume can check it
  continues the same run: :func:`check_state`). Checkpoints are taken at the start of a rollout, i.e. after the
  previous rollout was learnt from, so a resumed run continues from a
  consistent state. Every file is written to a temporary name and renamed, so a
  crash mid-write leaves the previous good file in place; the JSON is written
  last and says which step the checkpoint holds.

Per-episode scalars are written straight to the logger's TensorBoard output
(not via ``record``/``dump``), so they neither overwrite each other between
SB3's own dumps nor flush SB3's pending training statistics early.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Figure, TensorBoardOutputFormat
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import TrainFrequencyUnit
from stable_baselines3.common.utils import should_collect_more_steps

from purl.checkpoint import atomic_write_bytes
from purl.errors import CheckpointError
from purl.results import write_json

EPISODES_CSV = "episodes.csv"
EPISODE_FIELDS = ["episode", "env_step", "return", "accuracy", "global_sparsity", "flops", "meets_target",
                  "wall_time_s"]
# what every last.json holds; a resume refuses a state without one of them (see check_state)
STATE_KEYS = ("algo", "num_timesteps", "episodes", "evaluations", "wall_time_s", "best", "best_return",
              "best_accuracy", "top_accurate")
BEST_MODEL = "best_model.zip"
BEST_EPISODE = "best_episode.json"
CHECKPOINT_DIR = "checkpoints"
LAST_MODEL = "last.zip"
LAST_BUFFER = "last_replay_buffer.pkl"
LAST_STATE = "last.json"
TOP_ACCURATE = 8  # distinct most-accurate allocations kept as result candidates


def reaches_target(episode: dict[str, Any], target_sparsity: float) -> bool:
    """Whether an episode summary is at the target sparsity: the env's own count rule
    (``reaches_target``), or for records written before it, the global sparsity within 1e-9."""
    if "reaches_target" in episode:
        return bool(episode["reaches_target"])
    return float(episode["global_sparsity"]) >= target_sparsity - 1e-9


def checkpoint_paths(output_dir: str | Path) -> dict[str, Path]:
    """Where a run's checkpoint files live: ``model``, ``replay_buffer``, ``state``."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    return {"model": folder / LAST_MODEL, "replay_buffer": folder / LAST_BUFFER, "state": folder / LAST_STATE}


def save_model_atomic(model: BaseAlgorithm, path: Path) -> None:
    """``model.save`` to a temporary file renamed over ``path`` (never a half-written zip)."""
    atomic_write_bytes(path, lambda handle: model.save(handle))


def save_replay_buffer_atomic(model: OffPolicyAlgorithm, path: Path) -> None:
    """``model.save_replay_buffer`` to a temporary file renamed over ``path``."""
    atomic_write_bytes(path, lambda handle: model.save_replay_buffer(handle))


def planned_steps(model: BaseAlgorithm, total_timesteps: int) -> int:
    """Env steps an uninterrupted SB3 run of ``total_timesteps`` takes: SB3 checks its budget only between
    rollouts, so it is rounded up to whole rollouts (``n_steps x n_envs`` on-policy; ``train_freq`` steps x
    ``n_envs`` off-policy). A resumed run is stopped at exactly this count too."""
    n_envs = int(getattr(model, "n_envs", 1) or 1)
    chunk = n_envs
    if isinstance(model, OnPolicyAlgorithm):
        chunk = int(model.n_steps) * n_envs
    elif isinstance(model, OffPolicyAlgorithm) and getattr(model.train_freq, "unit", None) == TrainFrequencyUnit.STEP:
        chunk = int(model.train_freq.frequency) * n_envs
    return -(-int(total_timesteps) // chunk) * chunk


def check_state(state: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    """``last.json``'s dict when it is a complete resume state, else CheckpointError naming what is damaged.

    The state holds the only copy of the search's record (best, best-return, most accurate and top
    accurate episodes, counters): resuming without it would silently report a worse allocation and
    a wrong search cost, so a damaged state is an error rather than a fresh start from the model.
    """
    advice = ("its search record (best episodes, step and episode counts) is lost, so a resume would report a "
              "degraded result; run again without --resume into a new --output (this folder's results.json "
              "and pruned.pt are left as they are)")
    if state is None:
        what = "is missing" if not path.is_file() else "is not a readable JSON object"
        raise CheckpointError(f"cannot resume: checkpoint state '{path}' {what}; {advice}")
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"cannot resume: checkpoint state '{path}' lacks {', '.join(missing)}; {advice}")
    return state


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's dict, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def layer_sparsity_figure(sparsities: dict[str, float], title: str) -> Any:
    """A bar chart of per-layer sparsity (matplotlib Figure, no pyplot state)."""
    from matplotlib.figure import Figure as MplFigure

    names = list(sparsities)
    fig = MplFigure(figsize=(max(4.0, 0.35 * len(names) + 2.0), 3.0), dpi=80)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), [sparsities[n] for n in names], color="tab:blue")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("sparsity")
    ax.set_title(title, fontsize=9)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.88, bottom=0.3)  # fixed margins: tight_layout is slow
    return fig


class PurlCallback(BaseCallback):
    """Per-episode TensorBoard logging, episodes.csv, best-policy tracking and atomic periodic checkpoints.

    :param output_dir: the run's folder.
    :param checkpoint_every: env steps between checkpoints (0 = only at the end and on interrupt).
    :param figure_every: episodes between per-layer sparsity figures (also logged at the end).
    :param target_sparsity: the env's target; episodes reaching it are candidates for ``best_return``.
    :param state: a previous checkpoint's ``last.json`` when resuming (episode count, evaluations,
        wall time and best episodes carry on from it).
    :param budget: stop the search at this many env steps in all (:func:`planned_steps`); None = SB3's.
    :param accuracy_target: an explicitly set accuracy target (``env.target_accuracy``) the best episode
        must also meet; None = the best episode is judged on the target sparsity only.
    :param run: what identifies the run (``config``: its dict, ``seed``), saved in ``last.json``.
    """

    def __init__(self, output_dir: str | Path, *, checkpoint_every: int = 1000, figure_every: int = 100,
                 target_sparsity: float = 0.0, state: dict[str, Any] | None = None, budget: int | None = None,
                 accuracy_target: float | None = None, run: dict[str, Any] | None = None,
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        self.budget = budget
        self.accuracy_target = accuracy_target
        self.run = dict(run or {})
        self.output_dir = Path(output_dir)
        self.checkpoint_every = checkpoint_every
        self.figure_every = max(1, figure_every)
        state = state or {}
        self.episodes: int = int(state.get("episodes", 0))
        self.evaluations_base: int = int(state.get("evaluations", 0))
        self.wall_time_base: float = float(state.get("wall_time_s", 0.0))
        self.target_sparsity = float(target_sparsity)
        self.best: dict[str, Any] | None = state.get("best")
        self.best_return: dict[str, Any] | None = state.get("best_return")
        self.best_accuracy: dict[str, Any] | None = state.get("best_accuracy")
        self.top_accurate: list[dict[str, Any]] = list(state.get("top_accurate") or [])
        on_disk = read_json(self.output_dir / BEST_EPISODE) if state else None
        if on_disk is not None and (self.best is None or on_disk.get("return", -np.inf) > self.best["return"]):
            self.best = on_disk  # a best episode found after the last checkpoint (its model file is on disk)
        self.latest: dict[str, Any] | None = None
        self._eval_counts: dict[int, int] = {}
        self._last_checkpoint: int = int(state.get("num_timesteps", 0))
        self._started: float | None = None

    # ------------------------------------------------------------------ counters
    @property
    def evaluations(self) -> int:
        """Network evaluations made by the environments (this and earlier sessions of the run)."""
        return self.evaluations_base + sum(self._eval_counts.values())

    @property
    def wall_time_s(self) -> float:
        """Seconds spent learning (this and earlier sessions of the run)."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.wall_time_base + running

    def state(self) -> dict[str, Any]:
        """What ``last.json`` holds: enough to resume counting and best-tracking."""
        return {
            "algo": type(self.model).__name__,
            "num_timesteps": int(self.model.num_timesteps),
            "episodes": self.episodes,
            "evaluations": self.evaluations,
            "wall_time_s": self.wall_time_s,
            "best": self.best,
            "best_return": self.best_return,
            "best_accuracy": self.best_accuracy,
            "top_accurate": self.top_accurate,
            **self.run,
        }

    # ------------------------------------------------------------------ SB3 hooks
    def _on_training_start(self) -> None:
        self._started = time.perf_counter()
        self._last_checkpoint = max(self._last_checkpoint, int(self.model.num_timesteps))

    def _on_step(self) -> bool:
        infos = self.locals.get("infos") or []
        for idx, info in enumerate(infos):
            if "evaluations" in info:
                self._eval_counts[idx] = int(info["evaluations"])
            episode = info.get("purl_episode")
            if episode is not None:
                self._on_episode(episode)
        if self.budget is None or self.model.num_timesteps < self.budget:
            return True
        return self._rollout_ends_now()  # at the budget: stop, unless SB3 ends the rollout here anyway

    def _rollout_ends_now(self) -> bool:
        """Whether the rollout being collected ends with this step (then SB3's own budget check stops the
        run after learning from it; stopping here instead would drop that rollout's update)."""
        if isinstance(self.model, OnPolicyAlgorithm):
            return int(self.locals.get("n_steps", 0)) + 1 >= int(self.locals.get("n_rollout_steps", 0))
        if isinstance(self.model, OffPolicyAlgorithm) and "train_freq" in self.locals:
            episodes = int(self.locals.get("num_collected_episodes", 0)) + int(np.sum(self.locals.get("dones", 0)))
            return not should_collect_more_steps(self.locals["train_freq"],
                                                 int(self.locals.get("num_collected_steps", 0)), episodes)
        return False

    def _on_rollout_start(self) -> None:
        if self.checkpoint_every and self.model.num_timesteps - self._last_checkpoint >= self.checkpoint_every:
            self.save_checkpoint()

    def _on_training_end(self) -> None:
        if self._started is not None:  # stop the clock: the search is over
            self.wall_time_base += time.perf_counter() - self._started
            self._started = None
        self._log_figures()
        self.save_checkpoint()

    # ------------------------------------------------------------------ episodes
    def _on_episode(self, episode: dict[str, Any]) -> None:
        self.episodes += 1
        record = {
            "episode": self.episodes,
            "env_step": int(self.num_timesteps),
            "return": float(episode["return"]),
            "accuracy": float(episode["accuracy"]),
            "global_sparsity": float(episode["global_sparsity"]),
            "flops": float(episode["flops"]),
            "meets_target": reaches_target(episode, self.target_sparsity),  # the sparsity rule only
            "meets_accuracy_target": (None if self.accuracy_target is None
                                      else float(episode["accuracy"]) >= self.accuracy_target - 1e-12),
            "reaches_target": reaches_target(episode, self.target_sparsity),
            "wall_time_s": round(self.wall_time_s, 3),
            "layer_sparsities": {k: float(v) for k, v in episode["layer_sparsities"].items()},
            "components": {k: float(v) for k, v in (episode.get("components") or {}).items()},
        }
        self.latest = record
        values: dict[str, Any] = {
            "purl/episode_reward": record["return"],
            "purl/final_accuracy": record["accuracy"],
            "purl/global_sparsity": record["global_sparsity"],
            "purl/flops": record["flops"],
        }
        values.update({f"purl/reward/{k}": v for k, v in record["components"].items()})
        self._write_tensorboard(values)
        self._append_csv(record)
        at_target = reaches_target(episode, self.target_sparsity)
        if at_target and (self.best_return is None or record["return"] > self.best_return["return"]):
            self.best_return = record
        if at_target and (self.best_accuracy is None or record["accuracy"] > self.best_accuracy["accuracy"]):
            self.best_accuracy = record
        if at_target:
            self._keep_top_accurate(record)
        qualifies = record["meets_target"] and record["meets_accuracy_target"] is not False
        if qualifies and (self.best is None or record["return"] > self.best["return"]):
            self.best = record
            save_model_atomic(self.model, self.output_dir / BEST_MODEL)
            write_json(self.output_dir / BEST_EPISODE, record)
        if self.episodes % self.figure_every == 0:
            self._log_figures()

    def _keep_top_accurate(self, record: dict[str, Any]) -> None:
        """Keep the ``TOP_ACCURATE`` most accurate distinct allocations at the target (candidates for
        the result's re-ranking, :mod:`agents.selection`)."""
        same = [r for r in self.top_accurate if r["layer_sparsities"] == record["layer_sparsities"]]
        if same:
            return
        self.top_accurate.append(record)
        self.top_accurate.sort(key=lambda r: (-r["accuracy"], r["episode"]))
        del self.top_accurate[TOP_ACCURATE:]

    def _write_tensorboard(self, values: dict[str, Any]) -> None:
        """Write ``values`` at x = env steps to the logger's TensorBoard output, leaving SB3's pending values."""
        excluded: dict[str, tuple[str, ...] | None] = {k: None for k in values}
        for fmt in self.logger.output_formats:
            if isinstance(fmt, TensorBoardOutputFormat):
                fmt.write(values, excluded, step=int(self.num_timesteps))

    def _log_figures(self) -> None:
        figures = {}
        if self.latest is not None:
            figures["purl/layer_sparsity_latest"] = Figure(layer_sparsity_figure(
                self.latest["layer_sparsities"], f"episode {self.latest['episode']}: "
                f"return {self.latest['return']:.3f}, sparsity {self.latest['global_sparsity']:.3f}"), close=True)
        best, label = (self.best, "best") if self.best is not None else (self.best_return, "best return, below target")
        if best is not None:
            figures["purl/layer_sparsity_best"] = Figure(layer_sparsity_figure(
                best["layer_sparsities"], f"{label} (episode {best['episode']}): "
                f"return {best['return']:.3f}, accuracy {best['accuracy']:.3f}"), close=True)
        if figures:
            self._write_tensorboard(figures)

    def _append_csv(self, record: dict[str, Any]) -> None:
        path = self.output_dir / EPISODES_CSV
        new = not path.is_file() or path.stat().st_size == 0
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=EPISODE_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(record)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Write ``checkpoints/last.zip`` (+ replay buffer) and then ``last.json``, each atomically."""
        paths = checkpoint_paths(self.output_dir)
        if isinstance(self.model, OffPolicyAlgorithm) and self.model.replay_buffer is not None:
            save_replay_buffer_atomic(self.model, paths["replay_buffer"])
        save_model_atomic(self.model, paths["model"])
        write_json(paths["state"], self.state())
        self._last_checkpoint = int(self.model.num_timesteps)


def truncate_episodes_csv(output_dir: str | Path, max_step: int) -> None:
    """Drop ``episodes.csv`` rows after env step ``max_step`` (they belong to steps a resume will redo)."""
    path = Path(output_dir) / EPISODES_CSV
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row.get("env_step") or 0) <= max_step]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EPISODE_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, lambda handle: handle.write(buffer.getvalue().encode()))


class TqdmProgress(BaseCallback):
    """The search's progress bar: tqdm on stderr like every other PuRL bar (SB3's own bar is rich on stdout).

    :param total: the run's budget (``agent.total_timesteps``); the bar starts at the resumed step.
    """

    def __init__(self, total: int, desc: str = "search") -> None:
        super().__init__(0)
        self.total = int(total)
        self.desc = desc
        self._bar: Any = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        start = min(int(self.model.num_timesteps), self.total)
        self._bar = tqdm(total=self.total, initial=start, desc=self.desc, unit="step", dynamic_ncols=True,
                         leave=False)

    def _on_step(self) -> bool:
        if self._bar is not None:
            self._bar.update(max(0, min(int(self.model.num_timesteps), self.total) - self._bar.n))
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
