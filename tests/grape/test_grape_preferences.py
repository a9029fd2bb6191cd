"""Guided-cost preference generation and TPO (GRAPE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopref.data import Trajectory
from robopref.policies.vla import (
    Stage,
    apply_lora,
    build_lists,
    build_pairs,
    build_tiny_vla,
    external_reward,
    guided_scores,
    pair_margins,
    reference_logprobs,
    stage_costs,
    tpo_train,
)


def test_build_pairs_best_worst_and_all_with_margin():
    scores = np.array([0.2, 0.9, 0.5, 0.1, 0.4, 0.4])
    groups = ["a", "a", "a", "b", "b", "b"]
    assert build_pairs(scores, groups, "best_worst") == [(1, 0), (4, 3)]
    # all pairs with a gap > 0.25: group a: (1,0) 0.7, (1,2) 0.4, (2,0) 0.3; group b: (4,3), (5,3)
    assert build_pairs(scores, groups, "all", margin=0.25) == [
        (1, 0),
        (1, 2),
        (2, 0),
        (4, 3),
        (5, 3),
    ]
    # ties are never pairs; a group whose gap is below the margin gives none
    assert build_pairs(np.array([1.0, 1.0]), None, "all") == []
    assert build_pairs(np.array([1.0, 1.05]), None, "best_worst", margin=0.1) == []


def test_build_lists_orders_best_first():
    lists = build_lists(np.array([0.1, 0.7, 0.3, 5.0, 5.0]), [0, 0, 0, 1, 1])
    assert len(lists) == 1  # group 1 is all ties
    idx, lab = lists[0]
    assert idx.tolist() == [1, 2, 0] and lab.tolist() == [0.7, 0.3, 0.1]
    idx, _ = build_lists(np.arange(6.0), None, max_size=3)[0]
    assert idx.tolist() == [5, 1, 0]


def test_stage_costs_sequential_windows():
    T = 5
    hand = np.zeros((T, 3))
    obj = np.zeros((T, 3))
    goal = np.zeros((T, 3))
    obj[:, 0] = [0.5, 0.3, 0.3, 0.3, 0.3]  # hand reaches obj at step 1? no: |0.3| > 0.05
    hand[:, 0] = [0.0, 0.0, 0.28, 0.3, 0.3]  # reach (d < 0.05) first at step 2
    goal[:, 0] = [0.0, 0.0, 0.0, 0.0, 0.2]  # obj-goal distance from step 2: 0.3, 0.3, 0.1
    kp = {"hand": hand, "obj1": obj, "goal": goal}
    stages = [Stage("reach", "hand", "obj1", 0.05), Stage("push", "obj1", "goal", 0.02)]
    costs, done = stage_costs(kp, stages)
    assert done.tolist() == [True, False]
    np.testing.assert_allclose(costs, [0.0, 0.1 - 0.02])
    # the push is evaluated only after the reach: an early obj-goal coincidence does not count
    goal2 = goal.copy()
    goal2[0, 0] = 0.5
    costs2, done2 = stage_costs({**kp, "goal": goal2}, stages)
    assert done2.tolist() == [True, False]
    # reach never completed: the push is judged at the last step only
    costs3, done3 = stage_costs({**kp, "hand": hand - [1.0, 0.0, 0.0]}, stages)
    assert done3.tolist() == [False, False]
    np.testing.assert_allclose(costs3, [1.0 - 0.05 + 0.0, 0.1 - 0.02], atol=1e-12)
    assert external_reward(np.array([0.0, 0.08]), scale=0.1) == pytest.approx(np.exp(-0.8))


def test_guided_scores_weights_and_signs():
    comp = {
        "success": np.array([1.0, 0.0]),
        "stages": np.array([1.0, 0.5]),
        "logp": np.array([-2.0, -1.0]),
        "length": np.array([0.5, 1.0]),
        "collisions": np.array([0.0, 0.3]),
        "action": np.array([0.2, 0.1]),
    }
    w = {
        "success": 2.0,
        "stages": 1.0,
        "logp": 0.1,
        "length": 1.0,
        "collisions": 10.0,
        "action": 0.0,
    }
    np.testing.assert_allclose(guided_scores(comp, w), [2 + 1 - 0.2 - 0.5, 0.5 - 0.1 - 1.0 - 3.0])
    # hand-made costs -> exact chosen/rejected
    assert build_pairs(guided_scores(comp, w), None, "best_worst") == [(0, 1)]
    with pytest.raises(ValueError, match="unknown terms"):
        guided_scores(comp, {"speed": 1.0})


def _fixed_trajectories(n=6, T=4):
    rng = np.random.default_rng(0)
    return [
        Trajectory(
            rng.normal(size=(T + k % 2, 39)).astype(np.float32),
            rng.uniform(-1, 1, size=(T + k % 2, 4)).astype(np.float32),
            np.zeros(T + k % 2),
            instruction="press the button",
        )
        for k in range(n)
    ]


@pytest.mark.parametrize("loss", ["dpo", "ipo", "plackett_luce"])
def test_tpo_round_raises_chosen_over_rejected_margin(loss):
    torch.set_num_threads(1)
    policy = apply_lora(build_tiny_vla(["press the button"], hidden_size=32, n_layers=1, seed=1))
    trajs = _fixed_trajectories()
    pairs = [(0, 1), (2, 3), (4, 5)]
    ref = reference_logprobs(policy, trajs)
    before = pair_margins(policy, trajs, pairs, ref)
    np.testing.assert_allclose(before, 0.0, atol=1e-5)  # LoRA B = 0: policy == reference
    if loss == "plackett_luce":
        groups = [((0, 2, 4, 1, 3, 5), (3, 3, 3, 0, 0, 0))]
    else:
        groups = [((w, lo), (1.0, 0.0)) for w, lo in pairs]
    hist = tpo_train(policy, trajs, groups, loss=loss, beta=0.1, epochs=5, lr=5e-3, ref=ref)
    after = pair_margins(policy, trajs, pairs, ref)
    assert (after > 0.5).all(), after
    assert hist[-1]["loss"] < hist[0]["loss"]
