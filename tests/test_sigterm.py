"""SIGTERM stops a run like Ctrl-C: the agent search saves its checkpoint (the start of the rollout under way, an
exact point), the command says so and exits 143, and --resume finishes the search with exactly its budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quick.yaml")


def test_sigterm_during_purl_train_saves_a_checkpoint_says_so_and_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "purl.cli.main", "train", "--config", QUICK, "-o", str(out), "--quiet",
            f"cache_dir={tmp_path / 'cache'}", "agent.total_timesteps=6000", "agent.checkpoint_every=100000"]
    env = os.environ | {"HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    episodes = out / "episodes.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if episodes.is_file() and len(episodes.read_text().splitlines()) > 100:  # inside the 2nd rollout
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the search ended before it could be terminated"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "--resume" in err and "Traceback" not in err
    state = json.loads((out / "checkpoints" / "last.json").read_text())  # saved at the signal, not periodically
    assert 0 < state["num_timesteps"] < 6000
    resumed = subprocess.run(argv + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "search: stopped at env step" in err  # and where --resume continues from
    assert state["num_timesteps"] % 192 == 0 and state["exact"]["continuable"]  # the start of the rollout under way
    # exactly the steps of an uninterrupted run: 6000 rounded up to whole 192-step rollouts (SB3 checks its budget
    # between rollouts; agents.callbacks.planned_steps), whatever rollout the signal cut (it used to be 6000 + the
    # cut rollout's offset, e.g. 6046)
    assert json.loads((out / "results.json").read_text())["search_env_steps"] == 32 * 192 == 6144
    assert "resuming the search" in resumed.stderr and "continuing exactly" in resumed.stderr
