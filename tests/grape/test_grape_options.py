"""GRAPE's diagnosis options: length-normalised log-ratios, the SFT anchor, the baselines
(rejection sampling, step-level DPO), bad input, and fast-rendered image observations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopref.config import ConfigError
from robopref.data import Trajectory
from robopref.methods import grape
from robopref.methods.grape.recipe import sft_stage
from robopref.policies.vla import (
    apply_lora,
    batch_token_logprobs,
    build_tiny_vla,
    check_tokenizer,
    chosen_nll,
    length_normalized_scores,
    load_policy,
    reference_logprobs,
    rollout,
    save_policy,
    select_rejection_sampling,
    step_dpo_train,
    step_logratios,
    tpo_train,
)

NAN = float("nan")


def test_length_normalized_scores_by_hand():
    # one group, 2 items, up to 3 tokens; padding holds NaN (must be ignored)
    logp = torch.tensor([[[-1.0, -2.0, NAN], [-0.5, -0.5, -0.5]]])
    ref = torch.tensor([[[-1.5, -1.9, NAN], [-1.5, -1.5, -1.5]]])
    mask = torch.tensor([[[True, True, False], [True, True, True]]])
    # item 0: log-ratios 0.5 and -0.1 -> mean 0.2; item 1: 1.0 each -> mean 1.0; beta 0.5
    s = length_normalized_scores(logp, ref, mask, beta=0.5)
    torch.testing.assert_close(s, torch.tensor([[0.1, 0.5]]))
    # an item with no token scores 0 (no division by zero)
    empty = torch.zeros((1, 1, 3), dtype=torch.bool)
    assert length_normalized_scores(logp[:, :1], ref[:, :1], empty).item() == 0.0


def test_chosen_nll_value_and_gradient():
    logp = torch.tensor(
        [
            [[-1.0, -3.0, NAN], [-0.2, -0.2, -0.2]],  # group 0: item 0 chosen, 2 tokens
            [[-9.0, -9.0, -9.0], [-0.6, -0.3, -0.9]],  # group 1: item 1 chosen, 3 tokens
        ],
        requires_grad=True,
    )
    mask = torch.tensor([[[1, 1, 0], [1, 1, 1]], [[1, 1, 1], [1, 1, 1]]], dtype=torch.bool)
    value = chosen_nll(logp, mask, torch.tensor([0, 1]))
    # (4 / 2 + 1.8 / 3) / 2 = (2.0 + 0.6) / 2
    assert value.item() == pytest.approx(1.3)
    value.backward()
    grad = torch.zeros(2, 2, 3)
    grad[0, 0, :2] = -1 / (2 * 2)  # -1 / (groups * tokens of the chosen item)
    grad[1, 1, :] = -1 / (2 * 3)
    torch.testing.assert_close(logp.grad, grad)


def _trajs(n=4, T=5, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Trajectory(
            rng.normal(size=(T + k % 2, 39)).astype(np.float32),
            rng.uniform(-1, 1, size=(T + k % 2, 4)).astype(np.float32),
            np.zeros(T + k % 2),
            instruction="press the button",
        )
        for k in range(n)
    ]


def test_sft_anchor_raises_chosen_likelihood_in_tpo():
    torch.set_num_threads(1)
    trajs = _trajs(T=3)
    groups = [((0, 1), (1.0, 0.0)), ((2, 3), (1.0, 0.0))]

    def chosen_nll_now(policy):  # NLL per token of the chosen rollouts 0 and 2
        with torch.no_grad():
            logp, mask = batch_token_logprobs(policy, [trajs[0], trajs[2]])
        return float(-(logp[mask]).mean())

    nll = {}
    for w in (0.0, 5.0):
        torch.manual_seed(0)  # peft initialises the LoRA A matrices from the global stream
        policy = apply_lora(build_tiny_vla(["press the button"], hidden_size=16, n_layers=1))
        before = chosen_nll_now(policy)
        tpo_train(
            policy, trajs, groups, beta=0.1, epochs=5, batch_size=1, lr=1e-2, normalize=True,
            sft_weight=w,
        )  # fmt: skip
        nll[w] = chosen_nll_now(policy)
    assert nll[5.0] < before - 0.01 and nll[5.0] < nll[0.0] - 0.01, (before, nll)


def test_step_logratios_and_step_dpo():
    torch.set_num_threads(1)
    policy = apply_lora(build_tiny_vla(["press the button"], hidden_size=32, n_layers=1, seed=2))
    trajs = _trajs(2)  # lengths 5 and 6
    ref = reference_logprobs(policy, trajs)
    r, m = step_logratios(policy, trajs, ref)
    assert r.shape == (2, 6) and m.sum(1).tolist() == [5, 6]
    torch.testing.assert_close(r, torch.zeros_like(r), atol=1e-5, rtol=0)  # LoRA B = 0
    hist = step_dpo_train(policy, trajs, [(1, 0)], beta=0.5, epochs=6, lr=5e-3, ref=ref)
    r, _ = step_logratios(policy, trajs, ref)
    assert (r[1, :5] - r[0, :5] > 0).float().mean() >= 0.8 and hist[-1]["accuracy"] >= 0.8


def test_rejection_sampling_selection():
    scores = np.array([0.1, 0.9, 0.5, 0.2, 0.8, 0.3, 0.7])
    groups = ["a", "a", "a", "b", "b", "b", "b"]
    success = np.array([0, 0, 1, 0, 0, 0, 0], dtype=bool)
    # a: its one success (not the best score); b: none succeeded -> its top_k by score
    assert select_rejection_sampling(scores, groups, success, "success", top_k=2) == [2, 4, 6]
    assert select_rejection_sampling(scores, groups, success, "best", top_k=1) == [1, 4]
    success[[0, 1]] = True  # all successes, best first
    assert select_rejection_sampling(scores, groups, success, "success")[:3] == [1, 2, 0]
    with pytest.raises(ValueError, match="select"):
        select_rejection_sampling(scores, groups, success, "median")


def _base(**overrides):
    base = {
        "tasks": ["reach-v3", "button-press-v3"],
        "task_specs": {
            "reach-v3": {
                "stages": [{"name": "r", "a": "hand", "b": "goal", "threshold": 0.05}],
                "target_bodies": [],
            },
            "button-press-v3": {
                "stages": [{"name": "r", "a": "hand", "b": "obj1", "threshold": 0.05}],
                "target_bodies": ["button"],
            },
        },
    }
    base.update(overrides)
    return base


def test_bad_input_names_task_key_and_file(tmp_path):
    grape.Config.model_validate(_base(variants={"safety": {"collisions": 1.0}}, eval={}))
    specs = _base()["task_specs"]
    with pytest.raises(ValueError, match=r"task_specs\.button-press-v3\.stages"):
        grape.Config.model_validate(_base(task_specs={"reach-v3": specs["reach-v3"]}))
    no_bodies = {
        "reach-v3": {"stages": specs["reach-v3"]["stages"]},
        "button-press-v3": specs["button-press-v3"],
    }
    with pytest.raises(ValueError, match=r"task_specs\.reach-v3\.target_bodies: variants\.safety"):
        grape.Config.model_validate(
            _base(task_specs=no_bodies, variants={"safety": {"collisions": 1.0}})
        )
    with pytest.raises(ValueError, match="unknown cost term 'speed'"):
        grape.Config.model_validate(_base(variants={"fast": {"speed": 1.0}}))
    # an SFT checkpoint of other tasks: its tokenizer cannot write these instructions
    path = tmp_path / "sft.pt"
    save_policy(build_tiny_vla(["reach the goal position"], hidden_size=16, n_layers=1), path)
    policy = load_policy(path)
    check_tokenizer(policy, ["reach the goal position"], str(path))
    with pytest.raises(
        ValueError, match=r"sft\.pt: the checkpoint's tokenizer does not match.*'button'"
    ):
        check_tokenizer(policy, ["press the button"], str(path))


def test_resume_from_a_mismatched_sft_checkpoint_is_a_config_error(tmp_path):
    config = grape.Config.model_validate(
        _base(tasks=["button-press-v3"], progress=False, tensorboard=False, num_threads=1)
    )
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    save_policy(
        build_tiny_vla(["reach the goal position"], hidden_size=16, n_layers=1), ckpt / "sft.pt"
    )
    (ckpt / "sft.json").write_text("{}")
    # recorded as made by this config (a checkpoint swapped in by hand), so the run resumes it
    sft_stage(config, ckpt).done()
    with pytest.raises(ConfigError, match=r"checkpoints/sft\.pt: the checkpoint's tokenizer"):
        grape.run(config, tmp_path)


def test_eval_decoding_defaults_to_the_rollout_temperature():
    cfg = grape.Config.model_validate(_base(tpo={"temperature": 0.5}, eval={"decoding": "sampled"}))
    p = cfg.eval_protocol()
    assert not p.greedy and p.temperature == 0.5
    assert grape.Config.model_validate(_base()).eval_protocol().greedy


@pytest.mark.slow
def test_image_rollout_frame_matches_the_slow_renderer(monkeypatch):
    """A frame of an image-mode rollout (fast renderer: no shadows, reflections, skybox or
    multisampling) against gymnasium's ``env.render()`` of the same state (replayed from the
    episode's seed and actions). Tolerance: on the scene pixels (those not showing the skybox,
    which the fast renderer leaves black) the mean absolute difference is < 16 of 255 per
    channel and 90 % of the pixels are within 40 (shadows are the difference); the full-quality
    renderer matches ``env.render()`` exactly."""
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    from robopref.envs import make_env
    from robopref.envs.render import FrameRenderer, RenderConfig

    torch.set_num_threads(1)
    model = {"hidden_size": 32, "n_layers": 1, "obs_mode": "image+state", "image_size": 64}
    config = grape.Config.model_validate(
        _base(tasks=["button-press-v3"], max_episode_steps=6, model=model)
    )
    policy = grape.build_policy(config)
    pool = grape.make_pool(config)
    traj = rollout(policy, pool, "button-press-v3", [5], greedy=True)[0]
    pool.close()
    images = traj.observations["image"]
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8
    t = 4
    env = make_env(
        "button-press-v3",
        seed=0,
        max_episode_steps=6,
        render_mode="rgb_array",
        camera="corner",
        width=64,
        height=64,
    )
    obs, _ = env.reset(seed=5)
    for a in traj.actions[:t]:
        obs, *_ = env.step(a)
    np.testing.assert_allclose(obs, traj.state[t], atol=1e-6)
    slow = env.render()[::-1]  # Meta-World's corner cameras are upside down
    fast = images[t]
    scene = fast.max(-1) > 0
    diff = np.abs(fast.astype(int) - slow.astype(int)).max(-1)[scene]
    assert scene.mean() > 0.3
    assert diff.mean() < 16 and np.percentile(diff, 90) < 40, (diff.mean(), np.percentile(diff, 90))
    full = FrameRenderer(env, RenderConfig(camera="corner", width=64, height=64, fast=False))
    np.testing.assert_array_equal(full.render(), slow)
    full.close()
    env.close()


def test_pooled_success_over_seeds():
    rows = [
        {"success": 0.5, "episodes": 10, "steps": 80.0, "contacts": 2.0},
        {"success": 0.0, "episodes": 30, "steps": 100.0, "contacts": 6.0},
    ]
    p = grape.pooled(rows)
    assert p["success"] == pytest.approx(5 / 40) and p["episodes"] == 40
    assert p["success_se"] == pytest.approx(np.sqrt(0.125 * 0.875 / 40))
    assert p["steps"] == pytest.approx(95.0) and p["contacts"] == pytest.approx(5.0)
