"""``render_mode="rgb_array"`` in both envs (issue #22): SB3's ``make_vec_env`` builds envs by id with
``render_mode="rgb_array"``, which used to raise ``ConfigError: render_mode 'rgb_array' is not supported``.
``render()`` returns an HxWx3 uint8 image of the allocation so far: one bar per prunable layer (channel group)
as tall as its sparsity, the current layer in another colour; drawn with numpy only."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest

from purl.envs import CHANNEL_ENV_ID, ENV_ID, PruningEnv
from purl.envs.setup import RENDER_COLOURS, allocation_image


def _bar_heights(image: np.ndarray, n: int, colour: tuple[int, int, int]) -> list[int]:
    """Pixels of ``colour`` in each of the ``n`` equal-width bar slots (image columns between the margins)."""
    match = np.all(image == np.array(colour, dtype=np.uint8), axis=2)
    slots = np.array_split(np.arange(image.shape[1]), n)
    return [int(match[:, cols].any(axis=1).sum()) for cols in slots]


def test_allocation_image_draws_one_bar_per_layer_and_marks_the_current_one() -> None:
    image = allocation_image([0.5, 0.0, 1.0, 0.25], current=1)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0  # video encoders want even frame sizes
    filled = _bar_heights(image, 4, RENDER_COLOURS["bar"])
    assert filled[1] == 0 and filled[2] > filled[0] > filled[3] > 0
    assert filled[0] == pytest.approx(filled[2] / 2, abs=1) and filled[3] == pytest.approx(filled[2] / 4, abs=1)
    current = _bar_heights(image, 4, RENDER_COLOURS["current_slot"])
    assert current[1] > 0 and current[0] == current[2] == current[3] == 0
    assert allocation_image([0.5, 0.0, 1.0, 0.25], current=None).shape == image.shape
    assert not np.array_equal(allocation_image([0.5, 0.0, 1.0, 0.25], current=2), image)


def test_the_image_needs_no_matplotlib() -> None:
    code = ("import sys; from purl.envs.setup import allocation_image; allocation_image([0.1, 0.9], current=0); "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_both_granularities_list_rgb_array_and_keep_ansi(quick_task, granularity) -> None:
    assert {"ansi", "rgb_array"} <= set(PruningEnv.metadata["render_modes"])
    env = PruningEnv(quick_task.config, task=quick_task, render_mode="ansi", granularity=granularity)
    env.reset(seed=0)
    assert isinstance(env.render(), str) and "step 0/" in env.render()


@pytest.mark.parametrize("env_id", [ENV_ID, CHANNEL_ENV_ID])
def test_env_checkers_pass_with_rgb_array(quick_task, env_id: str) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gymnasium.make(env_id, config=quick_task.config, task=quick_task, render_mode="rgb_array")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)  # renders in rgb_array, then in every other listed mode (ansi)
        sb3_check_env(env.unwrapped, warn=True)
    assert not [w for w in caught if "render" in str(w.message).lower()], [str(w.message) for w in caught]
    env.close()


@pytest.mark.parametrize("env_id", [ENV_ID, CHANNEL_ENV_ID])
def test_gymnasium_make_rgb_array_renders_after_reset_and_step(quick_task, env_id: str) -> None:
    env = gymnasium.make(env_id, config=quick_task.config, task=quick_task, render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    assert isinstance(first, np.ndarray) and first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    n = env.unwrapped.n_layers
    assert _bar_heights(first, n, RENDER_COLOURS["bar"]) == [0] * n  # nothing pruned yet
    assert _bar_heights(first, n, RENDER_COLOURS["current_slot"])[0] > 0
    _, _, _, _, info = env.step(np.full(env.action_space.shape, 0.9, dtype=env.action_space.dtype))
    second = env.render()
    assert second.shape == first.shape and not np.array_equal(first, second)
    pruned = info["layer_sparsities"][env.unwrapped.layer_names[0]]
    colour = "current_bar" if n == 1 else "bar"
    assert (_bar_heights(second, n, RENDER_COLOURS[colour])[0] > 0) == (pruned > 0)
    if n > 1:
        assert _bar_heights(second, n, RENDER_COLOURS["current_slot"])[1] > 0
    env.close()


def test_gymnasium_make_from_a_config_alone(quick_task) -> None:
    # the env builds (or reuses) the config's task itself: the quick task's cache is already on disk
    env = gymnasium.make(ENV_ID, config=quick_task.config, render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().shape[2] == 3
    env.close()


def test_sb3_make_vec_env_with_the_env_id(quick_task) -> None:
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(ENV_ID, n_envs=2, seed=0, env_kwargs={"config": quick_task.config, "task": quick_task})
    try:
        obs = venv.reset()
        assert obs.shape[0] == 2
        assert venv.get_attr("render_mode") == ["rgb_array", "rgb_array"]
        images = venv.get_images()
        assert len(images) == 2 and all(i.dtype == np.uint8 and i.ndim == 3 for i in images)
        venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
    finally:
        venv.close()
