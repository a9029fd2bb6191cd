"""OT feature-matching reward on hand-made embeddings."""

import numpy as np
import pytest
import torch

from robopref.rewards.ot_reward import (
    OTReward,
    cosine_cost,
    ot_distance,
    ot_frame_rewards,
    ot_rewards,
)


def _video(n=6, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def test_cosine_cost_hand_values():
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = np.array([[3.0, 0.0], [-1.0, 0.0], [1.0, 1.0]])
    C = cosine_cost(x, y)
    expected = np.array([[0.0, 2.0, 1 - 1 / np.sqrt(2)], [1.0, 1.0, 1 - 1 / np.sqrt(2)]])
    np.testing.assert_allclose(C, expected, atol=1e-12)
    Ct = cosine_cost(torch.tensor(x), torch.tensor(y))
    np.testing.assert_allclose(Ct.numpy(), expected, atol=1e-12)
    # time term: |t/(n-1) - j/(m-1)| with n = 2, m = 3
    Cw = cosine_cost(x, y, time_weight=2.0) - C
    np.testing.assert_allclose(Cw, 2.0 * np.array([[0, 0.5, 1], [1, 0.5, 0]]), atol=1e-12)


def test_orthogonal_videos_get_reward_minus_one_per_frame():
    # every cost is exactly 1, so r_t = -n * sum_j P_tj * 1 = -n * (1/n) = -1
    x = np.eye(4)[:2]
    y = np.eye(4)[2:]
    np.testing.assert_allclose(ot_frame_rewards(x, y), [-1.0, -1.0], atol=1e-6)


def test_identical_video_gets_maximal_reward():
    x = np.eye(5)  # distinct frames
    r = ot_frame_rewards(x, x, eps=0.01)
    np.testing.assert_allclose(r, 0.0, atol=1e-6)  # the maximum: costs are >= 0
    other = ot_frame_rewards(_video(5, 5, 1), x, eps=0.01)
    assert other.sum() < r.sum() - 0.5


def test_time_reversed_video_is_lower_with_time_term_and_equal_without():
    x = _video(8, 16)
    same = ot_frame_rewards(x, x, eps=0.01, time_weight=1.0).sum()
    rev = ot_frame_rewards(x[::-1], x, eps=0.01, time_weight=1.0).sum()
    assert rev < same - 1.0
    # plain OT compares frame sets: reversal changes nothing (documented)
    same0 = ot_frame_rewards(x, x, eps=0.01).sum()
    rev0 = ot_frame_rewards(x[::-1], x, eps=0.01).sum()
    assert rev0 == pytest.approx(same0, abs=1e-6)


def test_closest_demo_is_used():
    x = _video(6, 8, 0)
    demos = [_video(6, 8, 1), x + 0.01 * _video(6, 8, 2), _video(7, 8, 3)]
    r, i = ot_rewards(x, demos, eps=0.02)
    assert i == 1
    assert r.sum() == pytest.approx(max(ot_frame_rewards(x, d, eps=0.02).sum() for d in demos))


def test_torch_distance_matches_numpy_and_has_gradients():
    x, y = _video(5, 4, 0), _video(7, 4, 1)
    xt = torch.tensor(x, requires_grad=True)
    d = ot_distance(xt, torch.tensor(y), eps=0.1, max_iter=500)
    r = ot_frame_rewards(x, y, eps=0.1)
    assert d.item() == pytest.approx(-r.sum() / 5, rel=1e-4)
    d.backward()
    assert torch.isfinite(xt.grad).all() and xt.grad.abs().sum() > 0
    # batched: [2, 5, 4] vs [2, 7, 4]
    db = ot_distance(torch.tensor(np.stack([x, x])), torch.tensor(np.stack([y, y[::-1]])), eps=0.1)
    assert db.shape == (2,) and db[0].item() == pytest.approx(d.item(), rel=1e-4)


def test_ot_reward_on_frames_and_errors():
    def embed(frames):
        return frames.reshape(len(frames), -1).astype(np.float64)

    rng = np.random.default_rng(0)
    demo = rng.integers(0, 255, (4, 2, 2, 3), dtype=np.uint8)
    reward = OTReward(embed, [demo], eps=0.01)
    assert reward.reward(demo).shape == (4,)
    assert reward.total(demo) > reward.total(255 - demo)
    with pytest.raises(ValueError, match="frames"):
        reward.reward(demo[0])
    with pytest.raises(ValueError, match="demo"):
        OTReward(embed, [])
    with pytest.raises(ValueError, match="embedding size"):
        cosine_cost(np.ones((2, 3)), np.ones((2, 4)))
