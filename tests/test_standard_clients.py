"""Both PuRL environments work with every standard RL client, built by id (issue #22, "every standard client").

* Stable-Baselines3: ``make_vec_env("purl/Pruning-v0", env_kwargs=...)`` (it asks for ``render_mode="rgb_array"``),
  in-process and ``SubprocVecEnv``; a short PPO ``learn``, ``evaluate_policy``, ``model.save`` / ``PPO.load``
  giving the same deterministic actions;
* Gymnasium's vector envs: ``gymnasium.make_vec(..., vectorization_mode="sync"|"async")`` and the
  ``SyncVectorEnv`` / ``AsyncVectorEnv`` classes stepping whole episodes (async also under ``forkserver``,
  Python 3.14's default start method on Linux);
* a CleanRL-style loop on the plain Gymnasium API (``reset``/``step`` with random actions until terminated), and
  CleanRL's ``ppo_continuous_action.py`` wrapper stack;
* ``gymnasium.make(id)`` with no arguments at all (the quick default task).

* RL Zoo (``rl_zoo3``, in the ``dev`` extra): its own ``python -m rl_zoo3.train`` and ``python -m rl_zoo3.enjoy``
  scripts, the env named only by id and found through ``--gym-packages purl.envs``, hyperparameters from a
  ``--conf-file``, the way an RL Zoo user runs any third-party env.

Environments are built cheaply as in ``tests/test_env.py``: the session's quick task (``config=``, ``task=``) in
process; forked or spawned workers get only the config and load the session's cached dense model.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from purl.envs import CHANNEL_ENV_ID, ENV_ID

IDS = [ENV_ID, CHANNEL_ENV_ID]
QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
STEP_TIMEOUT_S = 120  # an async worker that hangs fails the test instead of the run


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks: one intra-op thread."""


@pytest.fixture
def in_process(quick_task) -> dict:
    """Env kwargs sharing the session's quick task (no pre-training, no disk)."""
    return {"config": quick_task.config, "task": quick_task}


@pytest.fixture
def config_only(quick_task, quick_task_config) -> dict:
    """Env kwargs for worker processes: the config; each worker loads the session's cached dense model."""
    return {"config": quick_task_config}


def _episode_length(env_id: str, quick_task) -> int:
    env = gymnasium.make(env_id, config=quick_task.config, task=quick_task)
    try:
        return int(env.unwrapped.n_steps)
    finally:
        env.close()


# ---------------------------------------------------------------------------- Stable-Baselines3


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_make_vec_env_ppo_learn_evaluate_save_load(env_id: str, in_process: dict, tmp_path: Path) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    venv = make_vec_env(env_id, n_envs=2, seed=0, env_kwargs=in_process)
    try:
        assert venv.get_attr("render_mode") == ["rgb_array", "rgb_array"]  # what make_vec_env asks for
        model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=2, seed=0, device="cpu")
        model.learn(64)
        assert model.num_timesteps == 64
        mean, std = evaluate_policy(model, venv, n_eval_episodes=4, deterministic=True)
        assert math.isfinite(mean) and math.isfinite(std)
        model.save(tmp_path / "ppo")
        loaded = PPO.load(tmp_path / "ppo.zip", device="cpu")
        obs = venv.reset()
        for _ in range(6):
            action, _ = model.predict(obs, deterministic=True)
            again, _ = loaded.predict(obs, deterministic=True)
            np.testing.assert_array_equal(action, again)
            obs, reward, done, _ = venv.step(action)
            assert np.isfinite(reward).all()
        images = venv.get_images()
        assert len(images) == 2 and all(im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8 for im in images)
        resumed = PPO.load(tmp_path / "ppo.zip", env=venv, device="cpu")  # and it keeps learning on the env
        resumed.learn(32, reset_num_timesteps=False)
        assert resumed.num_timesteps == 64 + 32
    finally:
        venv.close()


@pytest.mark.parametrize("spelling", ["config-object", "module-prefixed-id"])
def test_sb3_subproc_vec_env_by_id(spelling: str, quick_task_config) -> None:
    """Workers start from a fresh interpreter (forkserver) that never imported ``purl.envs``: the id is registered
    there by unpickling the config (it used to fail with NamespaceNotFound under pytest or Jupyter), or by the
    module-prefixed id when the kwargs hold no PuRL object (a YAML path and overrides)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    if spelling == "config-object":
        env_id, kwargs = ENV_ID, {"config": quick_task_config}
    else:
        env_id = f"purl.envs:{ENV_ID}"
        kwargs = {"config": str(QUICK), "overrides": [f"cache_dir={quick_task_config.cache_dir}", "pretrain.epochs=3",
                                                       "device=cpu"]}
    venv = make_vec_env(env_id, n_envs=2, seed=0, env_kwargs=kwargs, vec_env_cls=SubprocVecEnv)
    try:
        model = PPO("MlpPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, seed=0, device="cpu")
        model.learn(16)
        assert model.num_timesteps == 16
    finally:
        venv.close()


def test_unpickling_a_config_registers_the_ids_without_importing_envs(quick_task_config) -> None:
    import pickle

    code = ("import pickle, sys, gymnasium; config = pickle.loads(sys.stdin.buffer.read()); "
            "print(all(i in gymnasium.registry for i in ('purl/Pruning-v0', 'purl/ChannelPruning-v0')), "
            "'purl.envs' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(quick_task_config), capture_output=True,
                          timeout=120)
    assert proc.stdout.decode().split() == ["True", "False"], proc.stderr.decode()[-2000:]


# ---------------------------------------------------------------------------- Gymnasium vector envs


def _make_vector(how: str, env_id: str, kwargs: dict) -> gymnasium.vector.VectorEnv:
    if how.startswith("make_vec-"):
        return gymnasium.make_vec(env_id, num_envs=2, vectorization_mode=how.removeprefix("make_vec-"), **kwargs)
    fns = [lambda: gymnasium.make(env_id, **kwargs) for _ in range(2)]
    return gymnasium.vector.SyncVectorEnv(fns) if how == "SyncVectorEnv" else gymnasium.vector.AsyncVectorEnv(fns)


def _run_episodes(venv: gymnasium.vector.VectorEnv, episodes: int, length: int) -> list[float]:
    """Step random actions until every sub-env finished ``episodes`` episodes; return the finished returns."""
    asynchronous = isinstance(venv, gymnasium.vector.AsyncVectorEnv)
    if asynchronous:
        venv.reset_async(seed=0)
        obs, _ = venv.reset_wait(timeout=STEP_TIMEOUT_S)
    else:
        obs, _ = venv.reset(seed=0)
    venv.action_space.seed(0)
    finished = np.zeros(venv.num_envs, dtype=int)
    returns, running = [], np.zeros(venv.num_envs)
    for _ in range((length + 1) * episodes + 1):  # NEXT_STEP autoreset: one reset step between episodes
        assert venv.observation_space.contains(obs)
        if finished.min() >= episodes:
            break
        action = venv.action_space.sample()
        if asynchronous:
            venv.step_async(action)
            obs, reward, terminated, truncated, _ = venv.step_wait(timeout=STEP_TIMEOUT_S)
        else:
            obs, reward, terminated, truncated, _ = venv.step(action)
        assert reward.dtype.kind == "f" and np.isfinite(reward).all()
        running += reward
        done = terminated | truncated
        returns.extend(running[done].tolist())
        running[done] = 0.0
        finished += done
    assert finished.min() >= episodes, finished
    return returns


@pytest.mark.parametrize("how", ["make_vec-sync", "make_vec-async", "SyncVectorEnv", "AsyncVectorEnv"])
@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_vector_envs_step_whole_episodes(env_id: str, how: str, in_process: dict, config_only: dict,
                                                   quick_task) -> None:
    kwargs = config_only if "async" in how.lower() else in_process  # forked workers load the cached model
    venv = _make_vector(how, env_id, kwargs)
    try:
        assert venv.num_envs == 2
        returns = _run_episodes(venv, episodes=2, length=_episode_length(env_id, quick_task))
        assert len(returns) >= 4 and all(math.isfinite(r) for r in returns)
    finally:
        venv.close()


@pytest.mark.parametrize("how", ["make_vec", "AsyncVectorEnv"])
def test_async_vector_env_under_forkserver(how: str, config_only: dict, quick_task) -> None:
    """Python 3.14's default start method on Linux (spawn on macOS): workers start without the parent's state; the
    class form's ``gymnasium.make(id)`` finds the id registered by unpickling the config (NamespaceNotFound before)."""
    if how == "make_vec":
        venv = gymnasium.make_vec(ENV_ID, num_envs=2, vectorization_mode="async",
                                  vector_kwargs={"context": "forkserver"}, **config_only)
    else:
        venv = gymnasium.vector.AsyncVectorEnv([lambda: gymnasium.make(ENV_ID, **config_only)] * 2,
                                               context="forkserver")
    try:
        assert len(_run_episodes(venv, episodes=1, length=_episode_length(ENV_ID, quick_task))) >= 2
    finally:
        venv.close()


# ---------------------------------------------------------------------------- CleanRL-style loops


def _random_rollout(env: gymnasium.Env, seed: int, episodes: int) -> list:
    """A CleanRL-style loop on the plain Gymnasium API: random actions until terminated, checking every step."""
    trajectory = []
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    for _ in range(episodes):
        assert env.observation_space.contains(obs) and isinstance(info, dict)
        terminated = truncated = False
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs), obs
            assert isinstance(reward, float) and math.isfinite(reward), reward
            assert isinstance(terminated, bool) and isinstance(truncated, bool) and isinstance(info, dict)
            trajectory.append((obs.tolist(), reward))
        assert terminated and not truncated and "purl_episode" in info
        obs, info = env.reset()
    return trajectory


@pytest.mark.parametrize("env_id", IDS)
def test_cleanrl_style_random_loop(env_id: str, in_process: dict) -> None:
    env = gymnasium.make(env_id, **in_process)
    try:
        first = _random_rollout(env, seed=3, episodes=3)
        assert first == _random_rollout(env, seed=3, episodes=3)  # the same seeds replay the same episodes
        assert first != _random_rollout(env, seed=4, episodes=3)
    finally:
        env.close()
    env.close()  # closing twice is harmless


@pytest.mark.parametrize("env_id", IDS)
def test_time_limit_truncation_then_reset_starts_a_fresh_episode(env_id: str, in_process: dict) -> None:
    env = gymnasium.make(env_id, max_episode_steps=1, **in_process)
    full = gymnasium.make(env_id, **in_process)
    zero = np.zeros(env.action_space.shape, dtype=env.action_space.dtype)
    try:
        env.reset(seed=0)
        _, _, _, truncated, _ = env.step(zero)
        assert truncated
        obs, _ = env.reset(seed=0)
        expected, _ = full.reset(seed=0)
        np.testing.assert_array_equal(obs, expected)
        assert env.step(zero)[1] == full.step(zero)[1]
    finally:
        env.close()
        full.close()


def _cleanrl_make_env(env_id: str, kwargs: dict, gamma: float = 0.99):
    """CleanRL ``ppo_continuous_action.py``'s ``make_env``, with PuRL's env kwargs."""

    def thunk() -> gymnasium.Env:
        env = gymnasium.make(env_id, **kwargs)
        env = gymnasium.wrappers.FlattenObservation(env)
        env = gymnasium.wrappers.RecordEpisodeStatistics(env)
        env = gymnasium.wrappers.ClipAction(env)
        env = gymnasium.wrappers.NormalizeObservation(env)
        env = gymnasium.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
        env = gymnasium.wrappers.NormalizeReward(env, gamma=gamma)
        return gymnasium.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))

    return thunk


@pytest.mark.parametrize("env_id", IDS)
def test_cleanrl_ppo_continuous_wrapper_stack(env_id: str, in_process: dict, quick_task) -> None:
    envs = gymnasium.vector.SyncVectorEnv([_cleanrl_make_env(env_id, in_process) for _ in range(2)])
    length = _episode_length(env_id, quick_task)
    try:
        assert isinstance(envs.single_action_space, gymnasium.spaces.Box)  # "only continuous action space"
        envs.reset(seed=1)
        envs.action_space.seed(1)
        lengths = []
        for _ in range(3 * (length + 1)):
            obs, reward, _, _, infos = envs.step(envs.action_space.sample())
            assert np.isfinite(obs).all() and np.isfinite(reward).all()
            if "episode" in infos:
                ended = infos["_episode"]
                assert np.isfinite(infos["episode"]["r"][ended]).all()
                lengths.extend(infos["episode"]["l"][ended].tolist())
        assert len(lengths) >= 4 and set(lengths) == {length}
    finally:
        envs.close()


# ---------------------------------------------------------------------------- defaults


def test_make_by_id_with_no_arguments_at_all(tmp_path: Path) -> None:
    """``gymnasium.make(id)`` alone: the quick default task (pre-trained once into ~/.cache/purl, here a tmp HOME)."""
    code = ("import gymnasium, math, purl.envs\n"
            "for env_id in (purl.envs.ENV_ID, purl.envs.CHANNEL_ENV_ID):\n"
            "    env = gymnasium.make(env_id)\n"
            "    obs, _ = env.reset(seed=0)\n"
            "    env.action_space.seed(0)\n"
            "    done = False\n"
            "    while not done:\n"
            "        obs, r, te, tr, info = env.step(env.action_space.sample())\n"
            "        assert env.observation_space.contains(obs) and math.isfinite(r)\n"
            "        done = te or tr\n"
            "    assert te and 'purl_episode' in info\n"
            "    env.close()\n"
            "print('ok')\n")
    env = os.environ | {"HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
    assert list((tmp_path / ".cache" / "purl" / "dense").glob("*.pt"))


# ---------------------------------------------------------------------------- RL Zoo


@pytest.fixture(scope="module")
def zoo_home(tmp_path_factory) -> Path:
    """One tmp HOME for the RL Zoo runs: the quick default task's dense model is pre-trained into it once."""
    return tmp_path_factory.mktemp("zoo-home")


@pytest.mark.parametrize("env_id", IDS)
def test_rl_zoo_train_then_enjoy_by_id(env_id: str, zoo_home: Path, tmp_path: Path) -> None:
    """RL Zoo's train and enjoy scripts, unmodified, on the env by id (the quick default task)."""
    (tmp_path / "hyperparams.yml").write_text(
        f"{env_id}:\n  n_timesteps: 32\n  policy: MlpPolicy\n  n_steps: 16\n  batch_size: 16\n  n_epochs: 2\n")
    env = os.environ | {"HOME": str(zoo_home), "OMP_NUM_THREADS": "1"}
    common = ["--algo", "ppo", "--env", env_id, "--gym-packages", "purl.envs", "-f", "logs", "--device", "cpu"]

    def zoo(script: str, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", f"rl_zoo3.{script}", *common, *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        return proc.stdout

    zoo("train", "--conf-file", "hyperparams.yml", "--seed", "0", "--eval-freq", "-1")
    run = tmp_path / "logs" / "ppo" / f"{env_id.replace('/', '-')}_1"
    assert (run / f"{env_id.replace('/', '-')}.zip").is_file()
    monitor = (run / "0.monitor.csv").read_text().splitlines()
    assert monitor[1] == "r,l,t" and len(monitor) > 2, monitor  # whole episodes were recorded
    lengths = {int(row.split(",")[1]) for row in monitor[2:]}
    assert len(lengths) == 1, lengths  # every episode walks the whole network
    length = lengths.pop()

    out = zoo("enjoy", "--exp-id", "1", "-n", str(2 * length), "--no-render", "--deterministic")
    assert f"Mean episode length: {length:.2f}" in out, out[-2000:]

