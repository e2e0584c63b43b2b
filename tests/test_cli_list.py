"""`purl list` names every model, dataset, config, method, reward and agent a config can use."""

from __future__ import annotations


def test_list_all_sections(run_cli) -> None:
    result = run_cli("list", "--configs-dir", "configs")
    assert result.rc == 0, result.err
    for section, example in [("models:", "lenet-5"), ("datasets:", "mnist5k"), ("configs:", "quick"),
                             ("methods:", "global-mp"), ("rewards:", "amc-flops"), ("agents:", "ppo")]:
        assert section in result.out
        assert example in result.out.split(section, 1)[1]


def test_list_one_section(run_cli) -> None:
    result = run_cli("list", "rewards")
    assert result.rc == 0
    assert result.out.startswith("rewards:") and "models:" not in result.out


def test_list_methods_names_the_agent_and_the_channel_allocators(run_cli):
    result = run_cli("list", "methods")
    assert result.rc == 0
    names = [line.split()[0] for line in result.out.splitlines()[1:] if line.strip()]
    assert {"agent", "global-mp", "erk", "lamp", "uniform"} <= set(names)
    assert "prune.granularity=channel" in result.out
