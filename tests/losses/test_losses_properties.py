"""Reductions between losses, exact masking, gradients and property tests of the loss core."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robopref.losses import (
    get_loss,
    lipo_lambda_loss,
    listnet_loss,
    pairwise_logistic_loss,
    plackett_luce_loss,
)

NAMES = ["bt", "slic", "ipo", "listnet", "plackett_luce", "lipo_lambda"]
PAIRWISE = ["bt", "slic", "ipo", "lipo_lambda"]  # sums over preferred pairs


def random_lists(seed: int, B: int, K: int, grades: int = 3, p_mask: float = 0.25):
    """float64 scores, integer graded labels (ties likely), masks with >= 2 valid items."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, K, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, grades, (B, K), generator=g).to(torch.float64)
    m = torch.rand(B, K, generator=g) > p_mask
    m[:, :2] = True
    perm = torch.argsort(torch.rand(B, K, generator=g), dim=1)  # valid items anywhere
    return s, y, m.gather(1, perm)


# ----------------------------------------------------------------------------------- reductions


def test_lipo_k2_is_constant_times_bt():
    s, _, _ = random_lists(0, 64, 2)
    y = torch.zeros(64, 2, dtype=torch.float64)
    y[torch.arange(64), torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(1))] = 1
    # Delta = |2^1 - 2^0| * |1/log2(2) - 1/log2(3)| * K for every pair
    const = 1.0 * (1.0 - 1.0 / math.log2(3.0)) * 2
    lipo, bt = lipo_lambda_loss(s, y), pairwise_logistic_loss(s, y)
    assert lipo.item() == pytest.approx(const * bt.item(), rel=1e-12)
    assert const == pytest.approx(0.7381, abs=1e-4)


def test_plackett_luce_k2_equals_bt_and_listnet():
    s, y, _ = random_lists(1, 64, 2)  # graded labels 0..2, ties included
    assert plackett_luce_loss(s, y).item() == pytest.approx(
        pairwise_logistic_loss(s, y).item(), rel=1e-12
    )
    onehot = (y[:, :1] >= y[:, 1:]).to(torch.float64)
    onehot = torch.cat([onehot, 1 - onehot], 1)
    assert listnet_loss(s, onehot).item() == pytest.approx(
        pairwise_logistic_loss(s, onehot).item(), rel=1e-12
    )


def test_plackett_luce_equals_listmle_over_the_label_order():
    # no ties: the per-item form equals -sum_k log softmax over the suffix of the label order
    s = torch.tensor([[0.3, -1.2, 2.0, 0.7, -0.1]], dtype=torch.float64)
    y = torch.tensor([[2.0, 4.0, 0.0, 1.0, 3.0]], dtype=torch.float64)
    order = np.argsort(-y[0].numpy())
    ss = s[0].numpy()[order]
    expected = sum(np.log(np.exp(ss[k:]).sum()) - ss[k] for k in range(5))
    assert plackett_luce_loss(s, y).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", PAIRWISE + ["plackett_luce"])
def test_all_tied_list_contributes_zero(name):
    loss = get_loss(name)
    s = torch.tensor([[1.0, -0.5, 0.2], [0.3, 2.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    assert loss(s, y).item() == pytest.approx(loss(s[:1], y[:1]).item(), rel=1e-12)
    assert loss(s, y, reduction="none")[1].item() == 0.0
    assert loss(s[1:], y[1:]).item() == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_masked_item_equals_item_removed(name):
    loss = get_loss(name)
    s, y, _ = random_lists(2, 8, 5)
    y = y + 0.5 * torch.arange(5, dtype=torch.float64)  # non-negative, some distinct
    m = torch.ones(8, 5, dtype=torch.bool)
    m[:, 2] = False
    s_pad, y_pad = s.clone(), y.clone()
    s_pad[:, 2], y_pad[:, 2] = float("nan"), float("inf")  # padding garbage must not leak
    s_pad.requires_grad_()
    keep = [0, 1, 3, 4]
    padded = loss(s_pad, y_pad, m)
    removed = loss(s[:, keep], y[:, keep])
    assert padded.item() == pytest.approx(removed.item(), rel=1e-12)
    padded.backward()
    assert torch.isfinite(s_pad.grad).all()
    assert (s_pad.grad[:, 2] == 0).all()


# ----------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    loss = get_loss(name)
    s, y, m = random_lists(3, 4, 5)
    s = s.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: loss(x, y, m), (s,))


def test_gradcheck_soft_bt():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(6, 2, generator=g, dtype=torch.float64).requires_grad_()
    p = torch.rand(6, 1, generator=g, dtype=torch.float64)
    y = torch.cat([p, 1 - p], 1)
    assert torch.autograd.gradcheck(lambda x: pairwise_logistic_loss(x, y, soft=True), (s,))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_scores_finite(name, dtype):
    loss = get_loss(name)
    s = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype, requires_grad=True)
    y = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]], dtype=dtype)
    value = loss(s, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()
    if name == "bt":  # both lists rank the preferred item 2e4 below: ~ 2e4 + ... per pair
        assert value.item() > 1e4


# ----------------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    B=st.integers(1, 5),
    K=st.integers(2, 7),
    name=st.sampled_from(NAMES),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
)
def test_random_lists_finite_nonnegative_permutation_invariant(seed, B, K, name, scale):
    loss = get_loss(name)
    s, y, m = random_lists(seed, B, K)
    s = s * scale
    value = loss(s, y, m)
    assert torch.isfinite(value) and value.item() >= 0
    per_list = loss(s, y, m, reduction="none")
    assert per_list.shape == (B,) and (per_list >= 0).all()
    assert loss(s, y, m, reduction="sum").item() == pytest.approx(per_list.sum().item(), rel=1e-9)
    # permuting the items of each list (scores, labels, mask together) changes nothing
    g = torch.Generator().manual_seed(seed + 1)
    perm = torch.argsort(torch.rand(B, K, generator=g), dim=1)
    permuted = loss(s.gather(1, perm), y.gather(1, perm), m.gather(1, perm))
    assert permuted.item() == pytest.approx(value.item(), rel=1e-9, abs=1e-12)
    # mask=None is the all-valid mask
    full = torch.ones(B, K, dtype=torch.bool)
    assert loss(s, y).item() == pytest.approx(loss(s, y, full).item(), rel=1e-12)
    # permuting the lists of the batch changes nothing either
    order = torch.randperm(B, generator=g)
    assert loss(s[order], y[order], m[order]).item() == pytest.approx(value.item(), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    K=st.integers(2, 6),
    name=st.sampled_from(["bt", "slic", "plackett_luce", "lipo_lambda"]),
)
def test_gradient_descent_direction_ranks_preferred_item_up(seed, K, name):
    """The gradient never pushes the top-labelled item down nor the bottom one up.

    (Not true of IPO, which regresses gaps onto 1 / (2 beta), nor of ListNet, which fits a
    target distribution: both push an over-confident top item back down.)
    """
    loss = get_loss(name)
    s, _, _ = random_lists(seed, 1, K)
    y = torch.arange(K, dtype=torch.float64)[None].flip(1)  # item 0 best, item K-1 worst
    s = s.requires_grad_()
    loss(s, y).backward()
    assert s.grad[0, 0].item() <= 1e-12
    assert s.grad[0, -1].item() >= -1e-12
