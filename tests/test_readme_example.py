"""The README's Python API example runs exactly as written and prints the measured accuracies."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "### Example: train an agent, apply its policy, and compare with Global MP"


def readme_example() -> str:
    """The first ```python block after the example's heading in README.md, verbatim."""
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, f"README.md lost the heading {MARKER!r}"
    after = text[text.index(MARKER):]
    match = re.search(r"^```python\n(.*?)^```", after, flags=re.S | re.M)
    assert match, "no ```python block after the example's heading"
    return match.group(1)


def test_readme_example_is_short_and_uses_the_public_api() -> None:
    code = readme_example()
    lines = [line for line in code.splitlines() if line.strip() and not line.startswith(("import ", "from "))]
    assert len(lines) <= 15, len(lines)
    for name in ("PruningEnv", "make_agent", "apply_policy", "finetune_and_measure", "global_magnitude_prune"):
        assert name in code, name


def test_readme_example_runs_and_prints_the_measured_accuracy(tmp_path: Path) -> None:
    # HOME in a tmp folder: the example's dense-model cache (~/.cache/purl) never touches the user's.
    # run from an empty temporary folder, not the repository root: configs/quick.yaml is the shipped config
    env = os.environ | {"HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for method in ("agent", "Global MP"):
        found = re.search(rf"^{method}: +sparsity (0\.\d+), test top-1 (\d+\.\d\d)%$", done.stdout, flags=re.M)
        assert found, done.stdout
        assert abs(float(found.group(1)) - 0.9) < 1e-3
        assert 50.0 < float(found.group(2)) <= 100.0
    assert (tmp_path / ".cache" / "purl" / "dense").is_dir()
