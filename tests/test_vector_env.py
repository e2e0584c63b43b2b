"""``gymnasium.make_vec("purl/Pruning-v0", ...)`` in ``sync`` and ``async`` mode (reset, steps, close).

The async mode forks its workers (multiprocessing's default ``fork`` context on Linux) from a parent
that already ran multi-threaded torch ops; without :func:`purl.runtime.install_fork_guard` the workers
deadlocked in torch's inherited OpenMP pool. Each case runs in a subprocess under a timeout so a
regression fails instead of hanging the test run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from purl.config import ExperimentConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    import gymnasium
    from purl import envs
    from purl.config import load_config

    mode, cache = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)                       # a parent with a live multi-threaded pool ...
    x = torch.randn(384, 384)
    for _ in range(10):
        x = torch.tanh(x @ x)                      # ... that has already run parallel ops
    cfg = load_config("configs/quick.yaml", [f"cache_dir={cache}", "pretrain.epochs=3", "device=cpu"])
    venv = gymnasium.make_vec("purl/Pruning-v0", num_envs=2, vectorization_mode=mode, config=cfg)
    obs, info = venv.reset(seed=0)
    rewards = []
    for step in range(3):
        action = np.full((2, *venv.single_action_space.shape), 0.1 * step, dtype=np.float32)
        obs, reward, terminated, truncated, info = venv.step(action)
        rewards.append(reward.tolist())
    venv.close()
    print("RESULT " + json.dumps({"obs_shape": list(obs.shape), "rewards": rewards,
                                  "finite": bool(np.isfinite(obs).all())}))
    """
)

_RESULTS: dict[str, dict] = {}


def _python(code: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str] | None:
    """Run ``python -c code args`` in its own session; on timeout kill the whole group (forked workers
    included, so a deadlock leaves nothing behind) and return None."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run(mode: str, cache: str) -> dict:
    """Run SCRIPT for ``mode`` in a fresh interpreter (cached per mode); fail, not hang, past TIMEOUT_S."""
    if mode not in _RESULTS:
        proc = _python(SCRIPT, mode, cache, timeout=TIMEOUT_S)
        if proc is None:
            pytest.fail(f"make_vec(vectorization_mode={mode!r}) did not finish in {TIMEOUT_S}s (deadlock?)")
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
        _RESULTS[mode] = json.loads(lines[-1][len("RESULT "):])
    return _RESULTS[mode]


@pytest.fixture(scope="module")
def cache(quick_task, quick_task_config: ExperimentConfig) -> str:
    """The session's quick-task cache, with the dense model already trained (workers only load it)."""
    return str(quick_task_config.cache_dir)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_reset_step_close(mode: str, cache: str) -> None:
    result = _run(mode, cache)
    assert result["obs_shape"][0] == 2
    assert result["finite"]
    assert len(result["rewards"]) == 3 and all(len(r) == 2 for r in result["rewards"])


def test_async_matches_sync(cache: str) -> None:
    """Same seed and actions: the forked workers compute exactly what the in-process envs compute."""
    assert _run("async", cache)["rewards"] == _run("sync", cache)["rewards"]


def test_forked_child_runs_torch_after_parallel_parent() -> None:
    """The guard itself: a plain ``os.fork`` child of a multi-threaded parent can run torch ops."""
    code = textwrap.dedent(
        """
        import os, torch
        from purl import envs  # installs the fork guard
        torch.set_num_threads(2)
        x = torch.randn(512, 512)
        for _ in range(10): x @ x
        pid = os.fork()
        if pid == 0:
            ok = float((x @ x).sum()) == float((x @ x).sum()) and torch.get_num_threads() == 1
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status))
        """
    )
    proc = _python(code, timeout=120)
    if proc is None:
        pytest.fail("forked child deadlocked in torch's inherited thread pool")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_install_fork_guard_is_idempotent() -> None:
    from purl import runtime

    runtime.install_fork_guard()
    runtime.install_fork_guard()
    assert runtime._FORK_GUARD_INSTALLED
