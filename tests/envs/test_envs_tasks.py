"""Meta-World task factory: make_env, vector envs, scripted policies, evaluate_on_task."""

import ctypes.util
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from robopref.envs import (
    INSTRUCTIONS,
    UnknownTaskError,
    evaluate_on_task,
    instruction,
    list_tasks,
    make_env,
    make_vector_env,
    run_episode,
    scripted_policy,
)


def test_list_tasks_has_the_50_v3_tasks_with_instructions():
    tasks = list_tasks()
    assert len(tasks) == 50
    assert tasks == sorted(tasks)
    assert {"button-press-v3", "drawer-open-v3", "assembly-v3", "peg-insert-side-v3"} <= set(tasks)
    assert set(INSTRUCTIONS) == set(tasks)
    assert instruction("button-press-v3") == "press the button"


def test_make_env_spaces_and_goal_observability():
    env = make_env("reach-v3", seed=0, max_episode_steps=200)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    assert env.observation_space.shape == (39,)
    obs, info = env.reset(seed=1)
    assert obs.shape == (39,) and env.observation_space.contains(obs)
    # reach-v3's configuration is [hand-free object xyz, goal xyz]: the goal is obs[36:39].
    np.testing.assert_allclose(obs[36:39], info["rand_vec"][3:6])
    assert np.linalg.norm(obs[36:39]) > 0.5
    hidden = make_env("reach-v3", seed=0, goal_observable=False)
    obs_h, _ = hidden.reset(seed=1)
    np.testing.assert_array_equal(obs_h[36:39], np.zeros(3))
    np.testing.assert_array_equal(obs_h[:36], obs[:36])


def test_reset_seed_fixes_the_configuration_and_rand_vec_option_forces_it():
    env = make_env("button-press-v3", seed=0)
    a, info_a = env.reset(seed=7)
    b, info_b = env.reset(seed=8)
    c, _ = env.reset(seed=7)
    np.testing.assert_array_equal(a, c)
    assert not np.allclose(info_a["rand_vec"], info_b["rand_vec"])
    forced, info_f = env.reset(options={"rand_vec": info_b["rand_vec"]})
    np.testing.assert_array_equal(forced, b)
    # The next unforced reset samples again (the configuration is not frozen).
    _, info_next = env.reset()
    assert not np.allclose(info_next["rand_vec"], info_b["rand_vec"])
    with pytest.raises(ValueError, match=r"rand_vec.*expected shape \(3,\), found \(2,\)"):
        env.reset(options={"rand_vec": np.zeros(2)})


def test_episode_is_truncated_at_max_episode_steps_even_beyond_500():
    env = make_env("reach-v3", seed=0, max_episode_steps=30)
    env.reset(seed=0)
    flags = [env.step(np.zeros(4, np.float32))[3] for _ in range(30)]
    assert flags == [False] * 29 + [True]
    long = make_env("reach-v3", seed=0, max_episode_steps=520)
    ep = run_episode(long, None, seed=0)
    assert len(ep.actions) == 520 and ep.dones.sum() == 1 and ep.dones[-1]


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("button-pres-v3", "button-press-v3"),
        ("button-press", "button-press-v3"),
        ("drawer_open-v3", "drawer-open-v3"),
    ],
)
def test_unknown_task_names_close_matches(name, suggestion):
    with pytest.raises(UnknownTaskError, match=f"unknown Meta-World task '{name}'.*'{suggestion}'"):
        make_env(name)


def test_unknown_task_without_close_match():
    with pytest.raises(UnknownTaskError, match="no close match"):
        make_env("fold-the-laundry")


def test_scripted_policy_output_and_bad_input():
    env = make_env("pick-place-v3", seed=0)
    obs, _ = env.reset(seed=0)
    pi = scripted_policy("pick-place-v3")
    action = pi(obs)
    assert action.shape == (4,) and action.dtype == np.float32
    assert np.all(np.abs(action) <= 1.0)
    with pytest.raises(ValueError, match=r"'obs': expected shape \(39,\), found \(38,\)"):
        pi(obs[:-1])


class RandomPolicy:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, 4)


def test_scripted_expert_succeeds_and_random_fails():
    for task in ("drawer-open-v3", "reach-v3"):
        expert = evaluate_on_task(
            scripted_policy(task), task, num_episodes=5, seed=0, max_episode_steps=150
        )
        assert expert["success_rate"] == 1.0, (task, expert)
        assert expert["mean_length"] == 150.0
        assert 10 < expert["mean_success_step"] < 120
        random = evaluate_on_task(
            RandomPolicy(seed=0), task, num_episodes=5, seed=0, max_episode_steps=150
        )
        assert random["success_rate"] == 0.0, (task, random)
        assert np.isnan(random["mean_success_step"])
        assert random["mean_return"] < 0.5 * expert["mean_return"]


def test_evaluate_on_task_terminate_on_success_shortens_episodes():
    task = "reach-v3"
    res = evaluate_on_task(
        scripted_policy(task),
        task,
        num_episodes=3,
        max_episode_steps=150,
        terminate_on_success=True,
    )
    assert res["success_rate"] == 1.0
    assert res["mean_length"] == res["mean_success_step"] < 150


def test_vector_env_sync_seeds_sub_envs_differently():
    venv = make_vector_env("reach-v3", num_envs=3, seed=0, max_episode_steps=50)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, 39)
    goals = obs[:, 36:39]
    assert len({tuple(g) for g in goals.round(6)}) == 3
    # sub-env 1 was seeded with 0 + 1: same configuration as a single env reset with seed 1.
    single, _ = make_env("reach-v3").reset(seed=1)
    np.testing.assert_allclose(obs[1], single)
    obs, rew, term, trunc, info = venv.step(np.zeros((3, 4), np.float32))
    assert rew.shape == (3,) and info["success"].dtype == bool
    venv.close()


def test_vector_env_async():
    venv = make_vector_env("reach-v3", num_envs=2, seed=0, vectorization_mode="async")
    try:
        obs, _ = venv.reset(seed=0)
        assert obs.shape == (2, 39)
        _, rew, *_ = venv.step(np.zeros((2, 4), np.float32))
        assert rew.shape == (2,)
    finally:
        venv.close()
    with pytest.raises(ValueError, match="vectorization_mode"):
        make_vector_env("reach-v3", 2, vectorization_mode="threads")


RENDER_CODE = (
    "from robopref.envs import make_env\n"
    "env = make_env('button-press-v3', seed=0, render_mode='rgb_array', camera='corner', width=64, height=48)\n"
    "env.reset(seed=0)\n"
    "img = env.render()\n"
    "assert img.shape == (48, 64, 3) and img.dtype.name == 'uint8' and img.std() > 5, img.shape\n"
)


def render_in_subprocess(backend: str) -> subprocess.CompletedProcess:
    # MUJOCO_GL is read when mujoco is imported: a fresh interpreter per backend.
    env = dict(os.environ, MUJOCO_GL=backend)
    return subprocess.run(
        [sys.executable, "-c", RENDER_CODE], env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is None, reason="libOSMesa not installed")
def test_render_rgb_array_with_osmesa():
    out = render_in_subprocess("osmesa")
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.gpu
def test_render_rgb_array_with_egl():
    out = render_in_subprocess("egl")
    assert out.returncode == 0, out.stderr[-2000:]


def test_scripted_policy_leaves_the_observation_untouched():
    from robopref.envs import make_env, scripted_policy

    for task in ("button-press-v3", "door-open-v3"):
        env = make_env(task, seed=0, max_episode_steps=5)
        obs, _ = env.reset(seed=0)
        before = obs.copy()
        scripted_policy(task)(obs)
        assert np.array_equal(obs, before), task
