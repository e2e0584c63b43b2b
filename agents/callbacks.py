"""What happens around SB3's learning loop, as small SB3 callbacks composed with ``CallbackList``.

Each watches the ``info["purl_episode"]`` summary every PuRL environment emits when an episode ends (one
pruning allocation of the whole network) or the loop's own hooks, and each works on its own SB3 loop:

* :class:`EpisodeTensorBoard`: per-episode scalars through SB3's logger (``purl/episode_reward``,
  ``purl/reward/<component>``, ``purl/final_accuracy``, ``purl/global_sparsity``, ``purl/flops``) at
  x = env steps, and per-layer sparsity bar charts of the latest and best episode
  (``purl/layer_sparsity_latest`` / ``purl/layer_sparsity_best``);
* :class:`EpisodeCsv`: appends each episode to ``episodes.csv`` (learning curves for reports);
* :class:`BestEpisodeTracker`: the *best* episode (highest return among episodes that meet the target:
  the target sparsity by the env's count rule, :func:`envs.target.episode_meets_target`; and, only when
  ``env.target_accuracy`` is set explicitly, ``meets_accuracy_target`` too), saving the policy at that
  moment to ``best_model.zip`` and the allocation to ``best_episode.json``; the *best-return* and most
  accurate episodes at the target sparsity and the most accurate distinct allocations (kept in
  ``last.json``); the evaluation count;
* :class:`Checkpointer`: every ``checkpoint_every`` env steps, at the end and on interrupt
  ``checkpoints/last.zip`` (plus ``checkpoints/last_replay_buffer.pkl`` off-policy), ``last_exact.pkl`` (random
  and env states, :mod:`agents.resume`) and ``checkpoints/last.json`` (num_timesteps, episodes, evaluations, wall
  time, best so far, and the run's config and seed, so a resume can check it continues the same run:
  :func:`check_state`), always at an exact point: the start of a rollout (after the previous one was learnt
  from) where every env starts an episode; an interrupt writes the last one, rolling the model back to it; every
  file is written to a temporary name and renamed, the JSON last;
* :class:`ExactBudgetStop`: stops the search at exactly ``budget`` env steps (:func:`planned_steps`), so a
  loop resumed from a checkpoint taken mid-rollout (one not written by :class:`Checkpointer`) does not overshoot;
  an uninterrupted run is unchanged;
* :class:`TqdmProgress`: the search's progress on stderr (a tqdm bar on a terminal, plain lines in a log).

:class:`PurlCallback` is the ``CallbackList`` of the first five that :func:`agents.training.train_agent`
uses (sharing one :class:`SearchClock`), and exposes the run's record (``best``, ``episodes``, ...).
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
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Figure, TensorBoardOutputFormat
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import TrainFrequencyUnit
from stable_baselines3.common.utils import should_collect_more_steps

from purl.checkpoint import atomic_write_bytes
from purl.envs.target import episode_meets_target
from purl.errors import CheckpointError
from purl.results import write_json

EPISODES_CSV = "episodes.csv"
EPISODE_FIELDS = ["episode", "env_step", "return", "accuracy", "global_sparsity", "flops", "meets_target",
                  "wall_time_s"]
# what every last.json holds; a resume refuses a state without one of them (see check_state)
STATE_KEYS = ("algo", "num_timesteps", "episodes", "evaluations", "wall_time_s", "best", "best_return",
              "best_accuracy", "top_accurate")
BEST_MODEL = "best_model.zip"
FINAL_MODEL = "final_model.zip"  # the policy a finished search ends with (agents.warm_start reads it)
BEST_EPISODE = "best_episode.json"
CHECKPOINT_DIR = "checkpoints"
LAST_MODEL = "last.zip"
LAST_BUFFER = "last_replay_buffer.pkl"
LAST_STATE = "last.json"
LAST_EXACT = "last_exact.pkl"  # random states and env states of the exact point (agents.resume)
TOP_ACCURATE = 8  # distinct most-accurate allocations kept as result candidates


def checkpoint_paths(output_dir: str | Path) -> dict[str, Path]:
    """Where a run's checkpoint files live: ``model``, ``replay_buffer``, ``exact``, ``state``."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    return {"model": folder / LAST_MODEL, "replay_buffer": folder / LAST_BUFFER, "exact": folder / LAST_EXACT,
            "state": folder / LAST_STATE}


def save_model_atomic(model: BaseAlgorithm, path: Path) -> None:
    """``model.save`` to a temporary file renamed over ``path`` (never a half-written zip)."""
    atomic_write_bytes(path, lambda handle: model.save(handle))


def save_replay_buffer_atomic(model: OffPolicyAlgorithm, path: Path) -> None:
    """``model.save_replay_buffer`` to a temporary file renamed over ``path``."""
    atomic_write_bytes(path, lambda handle: model.save_replay_buffer(handle))


def planned_steps(model: BaseAlgorithm, total_timesteps: int) -> int:
    """Env steps an uninterrupted SB3 run of ``total_timesteps`` takes: SB3 checks its budget only between
    rollouts, so it is rounded up to whole rollouts (``n_steps x n_envs`` on-policy; ``train_freq`` steps x
    ``n_envs`` off-policy; whole updates for a learner that says how long one is, ``model.steps_per_update()``,
    as PuRL's ARS does). A resumed run is stopped at exactly this count too."""
    n_envs = int(getattr(model, "n_envs", 1) or 1)
    chunk = n_envs
    if callable(getattr(model, "steps_per_update", None)):
        chunk = int(model.steps_per_update())
    elif isinstance(model, OnPolicyAlgorithm):
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


class SearchClock:
    """Seconds spent learning, over this and earlier sessions of a run (``base``); shared by the callbacks
    of one run so that they all report the same search time."""

    def __init__(self, base: float = 0.0) -> None:
        self.base = float(base)
        self._started: float | None = None

    def start(self) -> None:
        """Start counting (no-op while running)."""
        if self._started is None:
            self._started = time.perf_counter()

    def stop(self) -> None:
        """Stop counting; the running time is added to ``base`` (no-op when stopped)."""
        if self._started is not None:
            self.base += time.perf_counter() - self._started
            self._started = None

    @property
    def seconds(self) -> float:
        """Seconds so far, the running session included."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.base + running


class EpisodeCallback(BaseCallback):
    """Base of the per-episode callbacks: finds each ``info["purl_episode"]`` and hands its record to
    :meth:`_on_episode`. The record holds ``episode`` (1-based count, continued from ``episodes``),
    ``env_step``, ``return``, ``accuracy``, ``global_sparsity``, ``flops``, ``meets_target`` and
    ``reaches_target`` (the sparsity rule, :func:`envs.target.episode_meets_target`),
    ``meets_accuracy_target`` (None unless ``accuracy_target`` is set), ``wall_time_s``,
    ``layer_sparsities`` and ``components`` (and ``channel_keep`` at channel granularity).

    :param target_sparsity: the env's target sparsity.
    :param accuracy_target: an explicitly set accuracy target (``env.target_accuracy``); None = none.
    :param episodes: episodes already counted (a resumed run's).
    :param clock: the run's :class:`SearchClock` (shared between callbacks); None = a fresh one.
    """

    def __init__(self, *, target_sparsity: float = 0.0, accuracy_target: float | None = None, episodes: int = 0,
                 clock: SearchClock | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.target_sparsity = float(target_sparsity)
        self.accuracy_target = accuracy_target
        self.episodes = int(episodes)
        self.clock = clock if clock is not None else SearchClock()

    @property
    def wall_time_s(self) -> float:
        """Seconds spent learning (this and earlier sessions of the run)."""
        return self.clock.seconds

    def _on_training_start(self) -> None:
        self.clock.start()

    def _on_training_end(self) -> None:
        self.clock.stop()  # the search is over

    def _on_step(self) -> bool:
        for info in self.locals.get("infos") or []:
            episode = info.get("purl_episode")
            if episode is not None:
                self.episodes += 1
                self._on_episode(self.make_record(episode))
        return True

    def make_record(self, episode: dict[str, Any]) -> dict[str, Any]:
        """The record of the episode just counted (``self.episodes``) from the env's summary."""
        at_target = episode_meets_target(episode, self.target_sparsity)  # the sparsity rule only
        return {
            "episode": self.episodes,
            "env_step": int(self.num_timesteps),
            "return": float(episode["return"]),
            "accuracy": float(episode["accuracy"]),
            "global_sparsity": float(episode["global_sparsity"]),
            "flops": float(episode["flops"]),
            "meets_target": at_target,
            "meets_accuracy_target": (None if self.accuracy_target is None
                                      else float(episode["accuracy"]) >= self.accuracy_target - 1e-12),
            "reaches_target": at_target,
            "wall_time_s": round(self.wall_time_s, 3),
            "layer_sparsities": {k: float(v) for k, v in episode["layer_sparsities"].items()},
            "components": {k: float(v) for k, v in (episode.get("components") or {}).items()},
            # channel granularity: the keep plan itself (what the reported allocation is slimmed to)
            **({"channel_keep": {k: int(v) for k, v in episode["channel_keep"].items()}}
               if "channel_keep" in episode else {}),
        }

    def _on_episode(self, record: dict[str, Any]) -> None:
        raise NotImplementedError


class EpisodeCsv(EpisodeCallback):
    """Append every episode's record to ``output_dir/episodes.csv`` (:data:`EPISODE_FIELDS`; learning curves)."""

    def __init__(self, output_dir: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(output_dir) / EPISODES_CSV

    def _on_episode(self, record: dict[str, Any]) -> None:
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=EPISODE_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(record)


class BestEpisodeTracker(EpisodeCallback):
    """Keep the search's record: the best episode (highest return among those that meet the target sparsity
    and, when ``accuracy_target`` is set, that too; saved with the policy of that moment to
    ``best_model.zip`` / ``best_episode.json``), the best-return and most accurate episodes at the target
    sparsity, the :data:`TOP_ACCURATE` most accurate distinct allocations, and the evaluation count.

    :param output_dir: where ``best_model.zip`` and ``best_episode.json`` go.
    :param state: a previous checkpoint's ``last.json`` when resuming (counters and best episodes carry on).
    """

    def __init__(self, output_dir: str | Path, *, state: dict[str, Any] | None = None, **kwargs: Any) -> None:
        state = state or {}
        kwargs.setdefault("episodes", int(state.get("episodes", 0)))
        kwargs.setdefault("clock", SearchClock(float(state.get("wall_time_s", 0.0))))
        super().__init__(**kwargs)
        self.output_dir = Path(output_dir)
        self.evaluations_base: int = int(state.get("evaluations", 0))
        self.best: dict[str, Any] | None = state.get("best")
        self.best_return: dict[str, Any] | None = state.get("best_return")
        self.best_accuracy: dict[str, Any] | None = state.get("best_accuracy")
        self.top_accurate: list[dict[str, Any]] = list(state.get("top_accurate") or [])
        # the checkpoint's record is the whole truth: a best episode found after it (best_episode.json may be
        # newer) is found again, at the same step, by the exactly resumed search (agents.resume)
        self.latest: dict[str, Any] | None = None
        self._eval_counts: dict[int, int] = {}
        self._resumed = bool(state)
        self._eval_offsets: dict[int, int] = {}  # a resumed run's envs' own evaluations before learning (counted)

    @property
    def evaluations(self) -> int:
        """Network evaluations made by the environments (this and earlier sessions of the run)."""
        return self.evaluations_base + sum(self._eval_counts.values())

    def record_state(self) -> dict[str, Any]:
        """The search record as ``last.json`` holds it (counters, best episodes)."""
        return {"episodes": self.episodes, "evaluations": self.evaluations, "wall_time_s": self.wall_time_s,
                "best": self.best, "best_return": self.best_return, "best_accuracy": self.best_accuracy,
                "top_accurate": self.top_accurate}

    def _on_training_start(self) -> None:
        super()._on_training_start()
        if self._resumed and not self._eval_offsets:
            # the rebuilt envs scored the dense network once more: the checkpoint's count holds that already
            try:
                counts = self.training_env.get_attr("evaluations")
            except AttributeError:
                counts = []
            self._eval_offsets = {idx: int(count) for idx, count in enumerate(counts)}

    def _on_step(self) -> bool:
        for idx, info in enumerate(self.locals.get("infos") or []):
            if "evaluations" in info:
                self._eval_counts[idx] = int(info["evaluations"]) - self._eval_offsets.get(idx, 0)
        return super()._on_step()

    def _on_episode(self, record: dict[str, Any]) -> None:
        self.latest = record
        if record["reaches_target"]:
            if self.best_return is None or record["return"] > self.best_return["return"]:
                self.best_return = record
            if self.best_accuracy is None or record["accuracy"] > self.best_accuracy["accuracy"]:
                self.best_accuracy = record
            self._keep_top_accurate(record)
        qualifies = record["meets_target"] and record["meets_accuracy_target"] is not False
        if qualifies and (self.best is None or record["return"] > self.best["return"]):
            self.best = record
            save_model_atomic(self.model, self.output_dir / BEST_MODEL)
            write_json(self.output_dir / BEST_EPISODE, record)

    def _keep_top_accurate(self, record: dict[str, Any]) -> None:
        """Keep the ``TOP_ACCURATE`` most accurate distinct allocations at the target (candidates for
        the result's re-ranking, :mod:`agents.selection`)."""
        same = [r for r in self.top_accurate if r["layer_sparsities"] == record["layer_sparsities"]]
        if same:
            return
        self.top_accurate.append(record)
        self.top_accurate.sort(key=lambda r: (-r["accuracy"], r["episode"]))
        del self.top_accurate[TOP_ACCURATE:]


class EpisodeTensorBoard(EpisodeCallback):
    """Log every episode to the logger's TensorBoard output at x = env steps (``purl/episode_reward``,
    ``purl/reward/<component>``, ``purl/final_accuracy``, ``purl/global_sparsity``, ``purl/flops``), and every
    ``figure_every`` episodes and at the end bar charts of the latest and (with a ``tracker``) the best
    episode's per-layer sparsity. Written straight to the TensorBoard output, not via ``record``/``dump``, so
    they neither overwrite each other between SB3's dumps nor flush SB3's pending statistics early.

    :param figure_every: episodes between per-layer sparsity figures.
    :param tracker: the :class:`BestEpisodeTracker` whose best episode to draw; None = the latest only.
    """

    def __init__(self, *, figure_every: int = 100, tracker: BestEpisodeTracker | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.figure_every = max(1, figure_every)
        self.tracker = tracker
        self.latest: dict[str, Any] | None = None

    def _on_episode(self, record: dict[str, Any]) -> None:
        self.latest = record
        values: dict[str, Any] = {
            "purl/episode_reward": record["return"],
            "purl/final_accuracy": record["accuracy"],
            "purl/global_sparsity": record["global_sparsity"],
            "purl/flops": record["flops"],
        }
        values.update({f"purl/reward/{k}": v for k, v in record["components"].items()})
        self._write(values)
        if self.episodes % self.figure_every == 0:
            self.log_figures()

    def _on_training_end(self) -> None:
        super()._on_training_end()
        self.log_figures()

    def _write(self, values: dict[str, Any]) -> None:
        """Write ``values`` at x = env steps to the logger's TensorBoard output, leaving SB3's pending values."""
        excluded: dict[str, tuple[str, ...] | None] = {k: None for k in values}
        for fmt in self.logger.output_formats:
            if isinstance(fmt, TensorBoardOutputFormat):
                fmt.write(values, excluded, step=int(self.num_timesteps))

    def log_figures(self) -> None:
        """The latest and the best episode's per-layer sparsity as figures (the best-return episode
        stands in for the best while no episode meets the target)."""
        figures = {}
        latest = self.latest
        if latest is not None:
            figures["purl/layer_sparsity_latest"] = Figure(layer_sparsity_figure(
                latest["layer_sparsities"], f"episode {latest['episode']}: "
                f"return {latest['return']:.3f}, sparsity {latest['global_sparsity']:.3f}"), close=True)
        tracker = self.tracker
        best, label = (None, "")
        if tracker is not None:
            best, label = ((tracker.best, "best") if tracker.best is not None
                           else (tracker.best_return, "best return, below target"))
        if best is not None:
            figures["purl/layer_sparsity_best"] = Figure(layer_sparsity_figure(
                best["layer_sparsities"], f"{label} (episode {best['episode']}): "
                f"return {best['return']:.3f}, accuracy {best['accuracy']:.3f}"), close=True)
        if figures:
            self._write(figures)


class Checkpointer(BaseCallback):
    """Checkpoints a search can be resumed from exactly (:mod:`agents.resume`): every ``checkpoint_every`` env
    steps, on interrupt (:meth:`save_checkpoint`) and at the end (:meth:`save_final`): ``checkpoints/last.zip``
    (+ ``last_replay_buffer.pkl`` off-policy), ``last_exact.pkl`` (random and env states) and then ``last.json``
    (the search record), each atomically, the JSON last (it says which step the checkpoint holds).

    A checkpoint of an unfinished search is only ever taken at an exact point: the start of a rollout where every
    environment has just started an episode (each one is kept in memory, :class:`agents.resume.ExactPoint`). A
    periodic checkpoint that falls elsewhere waits for the next exact point; an interrupt writes the last exact
    point, rolling the model back to it (the steps since are redone on resume, exactly). The end of the search is
    written as it is, with the random states a resume of the finished search puts back. A search that can have
    no exact point (:func:`agents.resume.inexact_reason`) writes its state marked not exact: a resume of it
    restarts from scratch (:mod:`agents.training`).

    :param output_dir: the run's folder.
    :param tracker: the run's :class:`BestEpisodeTracker` (its record goes into ``last.json``).
    :param checkpoint_every: env steps between checkpoints (0 = only at the end and on interrupt).
    :param run: what identifies the run (``config``: its dict, ``seed``), saved in ``last.json``.
    :param last_checkpoint: env step of the checkpoint resumed from.
    :param elapsed: wall time of the run's earlier sessions (``last.json``'s ``elapsed_s``, resumed from).
    :param memos: per environment, the memoised scores the resumed environments were given.
    """

    def __init__(self, output_dir: str | Path, tracker: BestEpisodeTracker, *, checkpoint_every: int = 1000,
                 run: dict[str, Any] | None = None, last_checkpoint: int = 0, elapsed: float = 0.0,
                 memos: list[list[Any]] | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.output_dir = Path(output_dir)
        self.tracker = tracker
        self.checkpoint_every = checkpoint_every
        self.run = dict(run or {})
        self._last_checkpoint = int(last_checkpoint)
        self.elapsed_base = float(elapsed)
        self._session_start = time.perf_counter()
        self._memos: list[dict[tuple[int, ...], float]] = [
            {tuple(int(c) for c in key): float(acc) for key, acc in memo} for memo in (memos or [])]
        self._memo_seen: list[int] = [0] * len(self._memos)
        self.point: Any = None  # the last ExactPoint (agents.resume)
        self.reason: str | None = None  # why this search has no exact point (None: it has)
        self._in_rollout = False
        self._episode_starts = True  # whether every env has just started an episode (the last step's dones)
        self.rolled_back_from: int | None = None  # the env step an interrupt rolled the search back from
        self.kept_reason: str | None = None  # why an interrupt kept the checkpoint on disk instead

    @property
    def elapsed_s(self) -> float:
        """Wall time of this run so far, every session counted (from this session's start)."""
        return self.elapsed_base + time.perf_counter() - self._session_start

    def _init_callback(self) -> None:
        from purl.agents.resume import inexact_reason

        self.reason = inexact_reason(self.model, self.training_env)

    def state(self, point: Any = None, *, continuable: bool = False) -> dict[str, Any]:
        """What ``last.json`` holds: enough to resume counting and best-tracking (:data:`STATE_KEYS`), at ``point``
        (an :class:`agents.resume.ExactPoint`) or now; ``exact`` names ``last_exact.pkl`` and says whether the
        search can go on from there exactly (``continuable``) or only be reused as it ended."""
        record = dict(point.record) if point is not None else self.tracker.record_state()
        record["wall_time_s"] = self.tracker.wall_time_s  # the time spent, redone steps included
        steps = point.num_timesteps if point is not None else int(self.model.num_timesteps)
        return {"algo": type(self.model).__name__, "num_timesteps": steps, **record, "elapsed_s": self.elapsed_s,
                "exact": {"file": LAST_EXACT, "num_timesteps": steps, "continuable": continuable},
                **({"inexact_reason": self.reason} if self.reason else {}), **self.run}

    def _on_training_start(self) -> None:
        self._last_checkpoint = max(self._last_checkpoint, int(self.model.num_timesteps))
        self._episode_starts = True  # a learn() starts from reset envs (a resume resets them into fresh episodes)
        self.mark()

    def _on_step(self) -> bool:
        dones = self.locals.get("dones")
        if dones is not None:  # on- and off-policy loops both name them so (SB3 tracks episode starts on-policy only)
            self._episode_starts = bool(np.all(dones))
        return True

    def _on_rollout_start(self) -> None:
        self._in_rollout = True
        if not self.mark():
            return  # not an exact point: a due checkpoint waits for the next one
        if self.checkpoint_every and self.model.num_timesteps - self._last_checkpoint >= self.checkpoint_every:
            self._write(self.point)

    def _on_rollout_end(self) -> None:
        self._in_rollout = False

    def _on_training_end(self) -> None:
        self.save_final()

    def mark(self) -> bool:
        """Keep the search's state as the last exact point if it is at one now; whether it is."""
        from purl.agents.resume import ExactPoint

        if self.reason is not None or not self._episode_starts:
            return False
        self.point = ExactPoint.capture(self.model, self.tracker.record_state(), self._env_states())
        return True

    def _env_states(self) -> list[dict[str, Any]]:
        """Each env's RNG state and memo size now; the memoised scores made since the last call are kept."""
        venv = self.training_env
        if len(self._memos) != venv.num_envs:
            self._memos = [{} for _ in range(venv.num_envs)]
            self._memo_seen = [0] * venv.num_envs
        states = []
        for index in range(venv.num_envs):
            state = venv.env_method("resume_state", self._memo_seen[index], indices=[index])[0]
            memo = self._memos[index]
            for key, acc in state["memo"]:
                memo.setdefault(tuple(int(c) for c in key), float(acc))
            self._memo_seen[index] = int(state["memo_size"])
            states.append({"rng_state": state["rng_state"], "memo_size": len(memo)})
        return states

    def save_checkpoint(self) -> None:
        """Write the last exact point now (e.g. on Ctrl-C), the model rolled back to it if the search went on since
        (``episodes.csv`` cut back to its episodes); without one, keep the checkpoint on disk, or write the state
        as it is, marked not continuable, when there is none."""
        point = self.point if self.reason is None else None
        self.rolled_back_from = self.kept_reason = None
        if point is None:
            if self.reason is None and checkpoint_paths(self.output_dir)["state"].is_file():
                self.kept_reason = "no exact point was reached in this session"
                return
            self._write(None)
            return
        if point.num_timesteps != self.model.num_timesteps:
            lost = point.lost_reason(self.model)
            if lost is not None:  # the checkpoint on disk stays (an earlier exact point, or none)
                self.kept_reason = lost
                return
            self.rolled_back_from = int(self.model.num_timesteps)
            point.restore(self.model)
            truncate_episodes_csv(self.output_dir, point.num_timesteps, point.record["episodes"])
        self._write(point)

    def save_final(self) -> None:
        """Write the end of the search as it is: an exact point when every env has just started an episode after
        the last update, else the state with the random states a resume of the finished search puts back."""
        if not self._in_rollout and self.mark():
            self._write(self.point)
        else:
            self._write(None)

    def _write(self, point: Any) -> None:
        """Replay buffer, ``last.zip``, ``last_exact.pkl`` (``point``'s, or now's random states only), ``last.json``."""
        import pickle

        from purl.agents.resume import EXACT_VERSION, rng_state

        paths = checkpoint_paths(self.output_dir)
        if isinstance(self.model, OffPolicyAlgorithm) and self.model.replay_buffer is not None:
            save_replay_buffer_atomic(self.model, paths["replay_buffer"])
        save_model_atomic(self.model, paths["model"])
        if point is not None:
            payload = point.payload([list(memo.items()) for memo in self._memos])
        else:
            payload = {"version": EXACT_VERSION, "num_timesteps": int(self.model.num_timesteps),
                       "rng": rng_state(self.model), "envs": None}
        atomic_write_bytes(paths["exact"], lambda handle: handle.write(pickle.dumps(payload)))
        write_json(paths["state"], self.state(point, continuable=point is not None))
        self._last_checkpoint = int(payload["num_timesteps"])


class ExactBudgetStop(BaseCallback):
    """Stop the search at exactly ``budget`` env steps (:func:`planned_steps`). SB3 checks its budget only
    between rollouts, so a run resumed from a checkpoint taken mid-rollout would overshoot by up to one
    rollout; a rollout that ends exactly at the budget still ends normally (and is learnt from), so an
    uninterrupted run is unchanged."""

    def __init__(self, budget: int, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.budget = int(budget)

    def _on_step(self) -> bool:
        if self.model.num_timesteps < self.budget:
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


class PurlCallback(CallbackList):
    """PuRL's standard set, composed with ``CallbackList``: :class:`EpisodeCsv`, :class:`BestEpisodeTracker`,
    :class:`EpisodeTensorBoard`, :class:`Checkpointer` and (with ``budget``) :class:`ExactBudgetStop`,
    sharing one :class:`SearchClock`. Each part works on its own SB3 loop too.

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
    :param memos: per environment, the memoised scores a resumed run gave its environments (``last_exact.pkl``).
    """

    def __init__(self, output_dir: str | Path, *, checkpoint_every: int = 1000, figure_every: int = 100,
                 target_sparsity: float = 0.0, state: dict[str, Any] | None = None, budget: int | None = None,
                 accuracy_target: float | None = None, run: dict[str, Any] | None = None,
                 memos: list[list[Any]] | None = None, verbose: int = 0) -> None:
        targets = {"target_sparsity": target_sparsity, "accuracy_target": accuracy_target, "verbose": verbose}
        self.tracker = BestEpisodeTracker(output_dir, state=state, **targets)
        shared = {**targets, "episodes": self.tracker.episodes, "clock": self.tracker.clock}
        self.csv = EpisodeCsv(output_dir, **shared)
        self.tensorboard = EpisodeTensorBoard(figure_every=figure_every, tracker=self.tracker, **shared)
        self.checkpointer = Checkpointer(output_dir, self.tracker, checkpoint_every=checkpoint_every, run=run,
                                         last_checkpoint=int((state or {}).get("num_timesteps", 0)),
                                         elapsed=float((state or {}).get("elapsed_s", (state or {}).get(
                                             "wall_time_s", 0.0))),
                                         memos=memos, verbose=verbose)
        parts: list[BaseCallback] = [self.csv, self.tracker, self.tensorboard, self.checkpointer]
        if budget is not None:
            parts.append(ExactBudgetStop(budget, verbose))
        super().__init__(parts)

    # the run's record, as train_agent and the tests read it
    best = property(lambda self: self.tracker.best)
    best_return = property(lambda self: self.tracker.best_return)
    best_accuracy = property(lambda self: self.tracker.best_accuracy)
    top_accurate = property(lambda self: self.tracker.top_accurate)
    latest = property(lambda self: self.tracker.latest)
    episodes = property(lambda self: self.tracker.episodes)
    evaluations = property(lambda self: self.tracker.evaluations)
    wall_time_s = property(lambda self: self.tracker.wall_time_s)

    def state(self) -> dict[str, Any]:
        """What ``last.json`` holds (:meth:`Checkpointer.state`)."""
        return self.checkpointer.state()

    def save_checkpoint(self) -> None:
        """Write the checkpoint now (e.g. on Ctrl-C): :meth:`Checkpointer.save_checkpoint`."""
        self.checkpointer.save_checkpoint()


def truncate_episodes_csv(output_dir: str | Path, max_step: int, episodes: int | None = None) -> None:
    """Drop ``episodes.csv`` rows after env step ``max_step`` or past episode ``episodes`` (they belong to steps a
    resume redoes; kept, the resumed search would write them a second time)."""
    path = Path(output_dir) / EPISODES_CSV
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle)
                if int(row.get("env_step") or 0) <= max_step
                and (episodes is None or int(row.get("episode") or 0) <= episodes)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EPISODE_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, lambda handle: handle.write(buffer.getvalue().encode()))


class TqdmProgress(BaseCallback):
    """The search's progress on stderr, like every other PuRL bar (:func:`purl.progress.progress_bar`: a tqdm
    bar on a terminal, periodic plain lines in a log file; SB3's own bar is rich on stdout).

    :param total: the run's budget (``agent.total_timesteps``); the bar starts at the resumed step.
    """

    def __init__(self, total: int, desc: str = "search") -> None:
        super().__init__(0)
        self.total = int(total)
        self.desc = desc
        self._bar: Any = None

    def _on_training_start(self) -> None:
        from purl.progress import progress_bar

        start = min(int(self.model.num_timesteps), self.total)
        self._bar = progress_bar(self.total, initial=start, desc=self.desc, unit="step")

    def _on_step(self) -> bool:
        if self._bar is not None:
            self._bar.update(max(0, min(int(self.model.num_timesteps), self.total) - self._bar.n))
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
