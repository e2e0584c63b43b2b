"""`purl report` plots and names: titles, axis orientation and labels, legends outside the data, PNG + SVG,
methods' display names, and the comparison's config (compare.profile_sparsity) honoured by `purl report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import purl.compare.report as report
from purl.compare import CSV_COLUMNS, ResultsTable
from purl.compare.report import agent_algorithms, display_name, method_names, write_report
from purl.config import load_config

LAYERS = ["fc1", "fc2", "fc3"]
METHODS = [  # (label, method, min_threshold)
    ("agent", "agent", None), ("global-mp", "global-mp", None), ("global-mp+mt", "global-mp", 0.05),
    ("uniform", "uniform", None), ("erk", "erk", None), ("lamp", "lamp", None),
]


def _row(label: str, method: str, mt: float | None, target: float, seed: int) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in CSV_COLUMNS}
    dense_flops = 1_000_000
    row.update({
        "label": label, "method": method, "schedule": "oneshot", "min_threshold": mt, "target_sparsity": target,
        "seed": seed, "status": "ok", "achieved_sparsity": target, "after_test_top1": 95.0 - 10 * target - seed,
        "before_test_top1": 80.0, "after_test_top5": 99.0, "dense_test_top1": 96.0, "dense_flops": dense_flops,
        "sparse_flops": int(dense_flops * (1 - target)), "compression_ratio": 1 / (1 - target),
        "theoretical_speedup": 1 / (1 - target), "n_collapsed": 0, "n_near_collapsed": 0,
        "layer_sparsity": {name: target for name in LAYERS},
    })
    if method == "agent":
        row.update({"search_episodes": 10, "search_env_steps": 30, "search_evaluations": 20,
                    "search_wall_time_s": 1.0, "learning_curve": [[3, -0.5], [6, -0.2], [9, -0.1]]})
    return row


def _results(folder: Path, targets: tuple[float, ...] = (0.5, 0.9), seeds: tuple[int, ...] = (0, 1)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table = ResultsTable(folder / "results.csv")
    for seed in seeds:
        for target in targets:
            for label, method, mt in METHODS:
                table.add(_row(label, method, mt, target, seed))
    return folder


def _save_config(folder: Path, **compare: Any) -> None:
    config = load_config("configs/quick.yaml")
    raw = config.to_dict()
    raw["compare"].update(compare)
    (folder / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record every figure write_report saves (stem name -> figure) before it is written and closed."""
    seen: dict[str, Any] = {}
    original = report._save

    def record(fig: Any, stem: Path) -> dict[str, Path]:
        seen[Path(stem).stem] = {
            "title": fig.axes[0].get_title(), "xlabel": fig.axes[0].get_xlabel(),
            "inverted": fig.axes[0].xaxis_inverted(),
            "ax_legend": [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
            if fig.axes[0].get_legend() else None,
            "fig_legend": [t.get_text() for leg in fig.legends for t in leg.get_texts()],
        }
        return original(fig, stem)

    monkeypatch.setattr(report, "_save", record)
    return seen


# ----------------------------------------------------------------------------- display names


@pytest.mark.parametrize(("label", "method", "kwargs", "shown"), [
    ("global-mp", "global-mp", {}, "Global MP"),
    ("global-mp+mt", "global-mp", {"min_threshold": 0.05}, "Global MP + MT"),
    ("global-mp", "global-mp", {"min_threshold": 0.05}, "Global MP + MT"),
    ("global-mp", "global-mp", {"schedule": "gradual"}, "Global MP (gradual)"),
    ("uniform", None, {}, "Uniform"),
    ("uniform-plus", "uniform-plus", {}, "Uniform+"),
    ("erk", "erk", {}, "ERK"),
    ("lamp", "lamp", {}, "LAMP"),
    ("random", "random", {}, "Random"),
    ("agent", "agent", {"algo": "ppo"}, "PPO agent"),
    ("agent", "agent", {"algo": "sac"}, "SAC agent"),
    ("agent", "agent", {"algo": "mypkg.algos:MyPPO"}, "MyPPO agent"),
    ("agent", "agent", {}, "RL agent"),
    ("mypkg.alloc:Broken", "mypkg.alloc:Broken", {}, "Broken"),
    # a label the user chose is shown as written, and a suffix that contradicts the settings is not dropped
    ("my fancy run", "lamp", {}, "my fancy run"),
    ("global-mp+mt", "global-mp", {}, "global-mp+mt"),
    ("a", None, {}, "a"),
])
def test_display_name(label: str, method: str | None, kwargs: dict[str, Any], shown: str) -> None:
    assert display_name(label, method, **kwargs) == shown


def test_method_names_take_each_agents_algorithm_from_the_config_and_stay_unique() -> None:
    config = load_config("configs/quick.yaml", [
        "compare.methods=[{label: agent, method: agent, kwargs: {agent: {algo: sac}}},"
        "{label: a2c-run, method: agent, kwargs: {agent.algo: a2c}}]",
    ])
    assert agent_algorithms(config) == {"agent": "sac", "a2c-run": "a2c"}
    rows = [_row("agent", "agent", None, 0.5, 0), _row("a2c-run", "agent", None, 0.5, 0)]
    assert method_names(rows, config) == {"agent": "SAC agent", "a2c-run": "a2c-run"}
    assert method_names(rows) == {"agent": "RL agent", "a2c-run": "a2c-run"}
    rows = [_row("global-mp", "global-mp", None, 0.5, 0), _row("global-mp-oneshot", "global-mp", None, 0.5, 0)]
    assert method_names(rows) == {"global-mp": "Global MP (global-mp)",
                                  "global-mp-oneshot": "Global MP (global-mp-oneshot)"}


# ----------------------------------------------------------------------------- plots and summary


def test_report_writes_titled_labelled_png_and_svg_with_display_names(tmp_path: Path, figures) -> None:
    folder = _results(tmp_path / "cmp")
    _save_config(folder, profile_sparsity=0.5)
    written = write_report(folder)
    for plot in ("accuracy_vs_compression", "accuracy_vs_flops", "layer_profile", "learning_curve"):
        for fmt in ("png", "svg"):
            path = folder / f"{plot}.{fmt}"
            assert path.is_file() and path.stat().st_size > 1000, path
        assert written[plot] == folder / f"{plot}.png" and written[f"{plot}_svg"] == folder / f"{plot}.svg"
        assert figures[plot]["title"], plot
        assert figures[plot]["xlabel"], plot
    assert (folder / "accuracy_vs_flops.svg").read_text().lstrip().startswith("<?xml")
    names = ["PPO agent", "Global MP", "Global MP + MT", "Uniform", "ERK", "LAMP"]
    # FLOPs increase to the right, and the label says which way is "more pruned"
    flops = figures["accuracy_vs_flops"]
    assert not flops["inverted"] and "FLOPs" in flops["xlabel"] and "increasing to the right" in flops["xlabel"]
    assert flops["ax_legend"] == ["dense model", *names]
    # the layer profile's legend is the figure's (below the axes), not inside the bars
    profile = figures["layer_profile"]
    assert profile["ax_legend"] is None and profile["fig_legend"] == names
    assert "layer" in profile["xlabel"] and "0.5" in profile["title"]
    assert figures["learning_curve"]["ax_legend"][0] == "PPO agent @ 0.5, seed 0"
    summary = (folder / "summary.md").read_text()
    for name in names:
        assert f"| 0.9 | {name} | 2 |" in summary, name
    assert "| 0.5 | PPO agent | 0 | 10 |" in summary  # agent search cost table


def test_regenerated_svgs_are_byte_identical(tmp_path: Path) -> None:
    folder = _results(tmp_path / "cmp")
    write_report(folder)
    first = {p.name: p.read_bytes() for p in folder.glob("*.svg")}
    write_report(folder)
    assert len(first) == 5 and first == {p.name: p.read_bytes() for p in folder.glob("*.svg")}


# ----------------------------------------------------------------------------- purl report and the config


def test_purl_report_uses_the_saved_configs_profile_sparsity(run_cli, tmp_path: Path, figures) -> None:
    folder = _results(tmp_path / "cmp")  # both targets fully covered: the fallback would pick 0.9
    _save_config(folder, profile_sparsity=0.5)
    result = run_cli("report", folder)
    assert result.rc == 0, result.err
    assert "target global sparsity 0.5 " in figures["layer_profile"]["title"]
    assert "layer_profile_svg:" in result.out and "| 0.5 | PPO agent |" in result.out


def test_purl_report_config_flag_and_profile_sparsity_flag(run_cli, tmp_path: Path, figures) -> None:
    folder = _results(tmp_path / "cmp")
    _save_config(folder, profile_sparsity=0.9)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"agent": {"algo": "a2c"}, "compare": {"profile_sparsity": 0.5}}))
    assert run_cli("report", folder, "--config", other).rc == 0
    assert "target global sparsity 0.5 " in figures["layer_profile"]["title"]
    assert "| 0.9 | A2C agent |" in (folder / "summary.md").read_text()
    assert run_cli("report", folder, "--profile-sparsity", "0.9", "--config", other).rc == 0
    assert "target global sparsity 0.9 " in figures["layer_profile"]["title"]


def test_purl_report_warns_when_the_requested_profile_sparsity_has_no_results(run_cli, tmp_path: Path) -> None:
    folder = _results(tmp_path / "cmp")
    result = run_cli("report", folder, "--profile-sparsity", "0.8")
    assert result.rc == 0
    assert "profile sparsity 0.8 (--profile-sparsity) is not a target with results; plotted 0.9" in result.err


def test_purl_report_without_config_still_works_and_a_damaged_one_is_a_warning(run_cli, tmp_path: Path,
                                                                               figures) -> None:
    folder = _results(tmp_path / "cmp")
    assert run_cli("report", folder).rc == 0  # no config.yaml: best-covered target, "RL agent"
    assert "target global sparsity 0.9 " in figures["layer_profile"]["title"]
    assert "| 0.9 | RL agent |" in (folder / "summary.md").read_text()
    (folder / "config.yaml").write_text("compare: {profile_sparsity: 7}\n")
    result = run_cli("report", folder)
    assert result.rc == 0
    assert "warning: ignoring" in result.err and "config.yaml" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize(("argv", "message"), [
    (["--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    (["--profile-sparsity", "1.5"], "--profile-sparsity must be in [0, 1)"),
])
def test_purl_report_bad_input_is_one_line_exit_2(run_cli, tmp_path: Path, argv: list[str], message: str) -> None:
    folder = _results(tmp_path / "cmp", seeds=(0,))
    before = (folder / "results.csv").read_bytes()
    result = run_cli("report", folder, *argv)
    assert result.rc == 2
    assert message in result.err and "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert not (folder / "summary.md").exists() and (folder / "results.csv").read_bytes() == before
