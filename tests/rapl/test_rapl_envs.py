"""Rendering Meta-World frames, replaying datasets and the OT reward wrapper (tiny images)."""

from types import SimpleNamespace

import numpy as np
import pytest

from robopref.data import DataValidationError
from robopref.envs import CollectConfig, collect_dataset, make_env
from robopref.envs.render import (
    FrameRenderer,
    RenderConfig,
    render_dataset,
    replay_frames,
    strided_video,
)
from robopref.envs.wrappers import (
    FixedConfigurationWrapper,
    OTRewardWrapper,
    StateRewardWrapper,
    replay_rewards,
)
from robopref.policies.online.callbacks import OTRelabelCallback
from robopref.rewards.ot_reward import OTReward, affine_to_range

TASK = "reach-v3"


def _mean_colour(frames):
    """A fixed 'encoder': mean colour of the top, bottom, left and right halves, ``[n, 12]``."""
    f = np.asarray(frames, dtype=np.float64)
    H, W = f.shape[-3:-1]
    parts = [
        f[..., : H // 2, :, :],
        f[..., H // 2 :, :, :],
        f[..., : W // 2, :],
        f[..., W // 2 :, :],
    ]
    return np.concatenate([x.mean((-3, -2)) for x in parts], -1)


def test_render_shape_stride_and_replay():
    cfg = CollectConfig(tasks=[TASK], expert_episodes=1, noisy_episodes=1, noise_levels=[0.5],
                        goal_mismatch_episodes=0, random_episodes=0, other_task_episodes=0,
                        max_episode_steps=9)  # fmt: skip
    ds = collect_dataset(cfg, progress=False)
    rc = RenderConfig(width=24, height=16, frame_stride=4)
    out = render_dataset(ds, rc)
    assert len(out) == 2
    for traj, src in zip(out, ds, strict=True):
        img = traj.observations["image"]
        assert img.shape == (9, 16, 24, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(traj.observations["state"], src.observations)
        # held frames: steps 1-3 repeat step 0, 5-7 repeat step 4
        np.testing.assert_array_equal(img[1], img[0])
        np.testing.assert_array_equal(img[7], img[4])
        assert strided_video(traj).shape == (3, 16, 24, 3)
        assert traj.metadata["image_stride"] == 4
        assert img.std() > 1  # not a blank image
    # the arm moved between frames 0 and 8 of the expert episode
    assert (
        np.abs(out[0].observations["image"][8].astype(int) - out[0].observations["image"][0]).mean()
        > 0.1
    )
    # replay is deterministic: same frames again, and wrong states are caught
    env = make_env(TASK, seed=0, max_episode_steps=9)
    with FrameRenderer(env, rc) as r:
        again = replay_frames(env, r, ds[0].metadata["seed"], ds[0].actions)
        np.testing.assert_array_equal(again, out[0].observations["image"])
        with pytest.raises(DataValidationError, match="state"):
            replay_frames(env, r, ds[0].metadata["seed"], ds[0].actions, ds[0].state + 1.0)
    with pytest.raises(ValueError, match="camera"):
        FrameRenderer(env, RenderConfig(camera="nope"))
    env.close()


def _wrapped(mode, stride=3, steps=7):
    rc = RenderConfig(width=16, height=16, frame_stride=stride)
    env = make_env(TASK, seed=0, max_episode_steps=steps)
    rng = np.random.default_rng(0)
    demo = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    reward = OTReward(_mean_colour, [demo], eps=0.05)
    return OTRewardWrapper(env, reward, rc, mode=mode), reward


def test_wrapper_episode_mode_rewards_at_episode_end():
    env, reward = _wrapped("episode")
    env.reset(seed=1)
    rewards, infos = [], []
    done = False
    while not done:
        _, r, term, trunc, info = env.step(env.action_space.sample())
        rewards.append(r)
        infos.append(info)
        done = term or trunc
    assert len(rewards) == 7 and all(r == 0.0 for r in rewards[:-1])
    assert all("gt_reward" in i for i in infos) and "ot_rewards" not in infos[0]
    ot = infos[-1]["ot_rewards"]
    assert ot.shape == (7,) and rewards[-1] == ot[-1]
    # frames after steps 3, 6 and 7 (the last): transitions 0-2, 3-5 and 6 share them
    assert ot[0] == ot[1] == ot[2] and ot[3] == ot[4] == ot[5]
    assert len(env._emb) == 3
    expected = reward.reward_from_embeddings(np.stack(env._emb))
    np.testing.assert_allclose(ot, expected[[0, 0, 0, 1, 1, 1, 2]])
    assert np.all(ot <= 0) and np.all(ot >= -2.0)
    env.close()


def test_wrapper_prefix_mode_gives_online_rewards():
    env, _ = _wrapped("prefix", stride=2, steps=5)
    env.reset(seed=1)
    rewards = [env.step(env.action_space.sample())[1] for _ in range(5)]
    assert rewards[0] == 0.0  # nothing rendered yet
    assert all(r < 0 for r in rewards[1:]) and rewards[2] == rewards[1]
    env.reset(seed=2)
    assert env._emb == [] and env._frame_of_step == []
    with pytest.raises(ValueError, match="mode"):
        OTRewardWrapper(env.env, None, mode="bad")
    env.close()


def test_replay_rewards_pay_what_the_wrapper_pays_online():
    env, reward = _wrapped("episode", stride=3, steps=7)
    actions = np.random.default_rng(3).uniform(-1, 1, (7, 4)).astype(np.float32)
    # by hand: a plain env of the same scene, frames rendered after actions 3, 6 and 7 (the last)
    plain = make_env(TASK, seed=0, max_episode_steps=7)
    rc = RenderConfig(width=16, height=16, frame_stride=3)
    after, before, states = [], [], []
    with FrameRenderer(plain, rc) as r:
        obs, _ = plain.reset(seed=1)
        for t, a in enumerate(actions):
            states.append(obs)
            if t % 3 == 0:
                before.append(r.render())  # a dataset video's frame: before action t
            obs, *_ = plain.step(a)
            if t in (2, 5, 6):
                after.append(r.render())
    plain.close()
    expected = reward.reward(np.stack(after))[[0, 0, 0, 1, 1, 1, 2]]
    got = replay_rewards(env, 1, actions, np.stack(states))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # rewarding with the frames before each action (a demo video) pays other rewards
    late = np.repeat(reward.reward(np.stack(before)), 3)[:7]
    assert np.abs(late - got).max() > 1e-3
    with pytest.raises(ValueError, match="observation at step 0"):
        replay_rewards(env, 1, actions, np.zeros((7, 39)))
    with pytest.raises(ValueError, match="still running"):
        replay_rewards(env, 1, actions[:5])
    with pytest.raises(ValueError, match="ended at step 7"):
        replay_rewards(env, 1, np.concatenate([actions, actions[:1]]))
    env.close()
    # a per-step reward wrapper: its step rewards
    env = StateRewardWrapper(make_env(TASK, seed=0, max_episode_steps=7), lambda o: float(o[0]))
    got = replay_rewards(env, 1, actions)
    env.reset(seed=1)
    np.testing.assert_array_equal(got, [env.step(a)[1] for a in actions])


def test_relabel_callback_writes_the_episode_into_the_buffer():
    cb = OTRelabelCallback()
    buf = SimpleNamespace(buffer_size=10, pos=1, rewards=np.full((10, 2), -9.0, np.float32))
    cb.model = SimpleNamespace(replay_buffer=buf)
    # env 1 ends a 4-step episode; its last transition will be stored at pos = 1, the first
    # three sit at 8, 9, 0 (wrapping around)
    cb.locals = {"infos": [{}, {"ot_rewards": np.array([1.0, 2.0, 3.0, 4.0])}]}
    cb._on_step()
    np.testing.assert_array_equal(buf.rewards[[8, 9, 0], 1], [1.0, 2.0, 3.0])
    assert (buf.rewards[:, 0] == -9).all() and buf.rewards[1, 1] == -9  # untouched
    assert cb.episodes == 1 and cb.relabelled == 3


@pytest.mark.slow
def test_sac_buffer_holds_full_episode_ot_rewards():
    from stable_baselines3 import SAC

    env, _ = _wrapped("episode", stride=2, steps=6)
    seen = []

    class Keep(OTRelabelCallback):
        def _on_step(self):
            for info in self.locals["infos"]:
                if "ot_rewards" in info:
                    seen.append(info["ot_rewards"].copy())
            return super()._on_step()

    agent = SAC("MlpPolicy", env, learning_starts=100, seed=0, device="cpu")
    agent.learn(18, callback=Keep())
    stored = agent.replay_buffer.rewards[:18, 0]
    np.testing.assert_allclose(stored, np.concatenate(seen), rtol=1e-6)


def test_affine_to_range_maps_quantiles_and_keeps_order():
    r = np.linspace(-2.0, 0.0, 101)  # quantiles 0.05 -> -1.9, 0.95 -> -0.1
    a, b = affine_to_range(r, 0.0, 10.0)
    assert a == pytest.approx(10.0 / 1.8) and b == pytest.approx(1.9 * 10.0 / 1.8)
    assert a * -1.9 + b == pytest.approx(0.0) and a * -0.1 + b == pytest.approx(10.0)
    with pytest.raises(ValueError, match="spread"):
        affine_to_range(np.ones(10))
    rng = np.random.default_rng(0)
    demo, video = rng.integers(0, 255, (2, 4, 2, 2, 3), dtype=np.uint8)
    flat = lambda f: f.reshape(len(f), -1).astype(np.float64)  # noqa: E731
    raw = OTReward(flat, [demo]).reward(video)
    scaled = OTReward(flat, [demo], affine=(2.0, 5.0)).reward(video)
    np.testing.assert_allclose(scaled, 2.0 * raw + 5.0)
    with pytest.raises(ValueError, match="affine"):
        OTReward(flat, [demo], affine=(-1.0, 0.0))


def test_state_reward_wrapper_and_fixed_configuration():
    env = FixedConfigurationWrapper(make_env("reach-v3", seed=0, max_episode_steps=5), 123)
    first, _ = env.reset(seed=1)
    again, _ = env.reset(seed=2)
    np.testing.assert_array_equal(first, again)  # the seed passed in is ignored
    other, _ = make_env("reach-v3", max_episode_steps=5).reset(seed=124)
    assert np.abs(first[36:39] - other[36:39]).max() > 1e-3  # a different scene has another goal
    env = StateRewardWrapper(env, lambda obs: -float(np.linalg.norm(obs[:3] - obs[36:39])))
    env.reset()
    obs, reward, _, _, info = env.step(np.zeros(4, dtype=np.float32))
    assert reward == pytest.approx(-np.linalg.norm(obs[:3] - obs[36:39]))
    assert info["gt_reward"] != reward and np.isfinite(info["gt_reward"])


def test_gt_logger_reads_the_env_reward_not_the_learned_one():
    from stable_baselines3 import SAC

    from robopref.policies.online.callbacks import GroundTruthLogger

    env = StateRewardWrapper(make_env("reach-v3", seed=0, max_episode_steps=12), lambda obs: 0.0)
    logger = GroundTruthLogger()
    SAC("MlpPolicy", env, learning_starts=100, seed=0, device="cpu").learn(24, callback=logger)
    assert len(logger.returns) == 2 and len(logger.successes) == 2
    assert all(
        r > 0 for r in logger.returns
    )  # reach's own reward is positive; the learned one is 0
