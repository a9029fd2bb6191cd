"""Hand-computed values of every loss of the core on small worked cases.

Every expected number below is written out with ``math`` from the formula in the docstring of the
loss (never by calling robopref), so a wrong sign, a wrong pair set or a wrong reduction fails.
"""

import math

import pytest
import torch

from robopref.losses import (
    LOSSES,
    get_loss,
    ipo_loss,
    lambda_weights,
    lipo_lambda_loss,
    listnet_loss,
    log_ratio_scores,
    pairwise_hinge_loss,
    pairwise_logistic_loss,
    plackett_luce_loss,
    segment_return_scores,
)


def sp(x: float) -> float:
    """softplus(x) = log(1 + exp(x))."""
    return math.log1p(math.exp(x))


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def close(value: torch.Tensor, expected: float, tol: float = 1e-10) -> None:
    assert value.dim() == 0
    assert value.item() == pytest.approx(expected, rel=tol, abs=tol)


# ----------------------------------------------------------------------------------- pairwise


def test_bt_worked_example():
    # Pairs with psi_i > psi_j: (0, 1) d = 1, (0, 2) d = -1; mean over the 2 pairs.
    s, y = t([[2.0, 1.0, 3.0]]), t([[1.0, 0.0, 0.0]])
    expected_sum = sp(-1.0) + sp(1.0)
    close(pairwise_logistic_loss(s, y, reduction="sum"), expected_sum)
    close(pairwise_logistic_loss(s, y), expected_sum / 2)
    assert expected_sum == pytest.approx(1.6265235, abs=1e-6)  # Rax's doctest value


def test_bt_pools_pairs_over_the_batch():
    # List 0: 1 pair (d = 0.5); list 1: 3 pairs with graded labels 2 > 1 > 0.
    s = t([[0.5, 0.0, 0.0], [0.0, 1.0, -1.0]])
    y = t([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
    m = torch.tensor([[True, True, False], [True, True, True]])
    pairs = [sp(-0.5), sp(-(0.0 - 1.0)), sp(-(0.0 + 1.0)), sp(-(1.0 + 1.0))]
    close(pairwise_logistic_loss(s, y, m), sum(pairs) / 4)
    per_list = pairwise_logistic_loss(s, y, m, reduction="none")
    assert per_list.tolist() == pytest.approx([pairs[0], sum(pairs[1:])], rel=1e-12)


def test_bt_soft_labels_cross_entropy():
    s = t([[0.3, -0.2], [1.0, 2.0]])
    y = t([[0.8, 0.2], [0.5, 0.5]])
    d0, d1 = 0.5, -1.0
    ce0 = -0.8 * math.log(1 / (1 + math.exp(-d0))) - 0.2 * math.log(1 / (1 + math.exp(d0)))
    ce1 = -0.5 * math.log(1 / (1 + math.exp(-d1))) - 0.5 * math.log(1 / (1 + math.exp(d1)))
    close(pairwise_logistic_loss(s, y, soft=True), (ce0 + ce1) / 2)
    # y = 1 reduces to the hard loss.
    hard = t([[1.0, 0.0]])
    close(pairwise_logistic_loss(s[:1], hard, soft=True), sp(-d0))
    close(get_loss("bt")(s[:1], hard, soft=True), pairwise_logistic_loss(s[:1], hard).item())


def test_bt_soft_labels_validated():
    with pytest.raises(ValueError, match="labels"):
        pairwise_logistic_loss(t([[0.0, 1.0]]), t([[0.7, 0.7]]), soft=True)
    with pytest.raises(ValueError, match="K = 2"):
        pairwise_logistic_loss(t([[0.0, 1.0, 2.0]]), t([[0.5, 0.5, 0.0]]), soft=True)


def test_hinge_worked_example():
    s, y = t([[2.0, 1.0, 3.0], [1.0, 0.5, 1.5]]), t([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    # list 0: max(0, 1 - 1) = 0, max(0, 1 + 1) = 2; list 1: (2,0) d=.5 -> .5, (2,1) d=1 -> 0.
    close(pairwise_hinge_loss(s, y, reduction="sum"), 2.5)
    close(pairwise_hinge_loss(s, y), 2.5 / 4)
    close(pairwise_hinge_loss(s, y, margin=2.0, reduction="sum"), 1.0 + 3.0 + 1.5 + 1.0)


def test_ipo_matches_trl_form():
    # TRL: logits = (logp_w - ref_w) - (logp_l - ref_l); loss = (logits - 1 / (2 beta))^2.
    beta = 0.5
    logp_w, ref_w, logp_l, ref_l = -3.0, -4.0, -5.0, -4.5
    logits = (logp_w - ref_w) - (logp_l - ref_l)  # 1.5
    expected = (logits - 1 / (2 * beta)) ** 2  # 0.25
    h = t([[logp_w - ref_w, logp_l - ref_l]])
    y = t([[1.0, 0.0]])
    close(ipo_loss(h, y, beta=beta), expected)
    close(ipo_loss(beta * h, y, beta=beta, scores_include_beta=True), expected)
    # Three items: pairs (0,1) d=1 and (0,2) d=-1 with target 1: 0 and 4.
    close(ipo_loss(t([[2.0, 1.0, 3.0]]), t([[1.0, 0.0, 0.0]]), beta=0.5), 2.0)
    with pytest.raises(ValueError, match="beta"):
        ipo_loss(h, y, beta=0.0)


# ----------------------------------------------------------------------------------- listwise


def test_listnet_worked_example():
    s, y = t([[2.0, 1.0, 3.0]]), t([[2.0, 1.0, 1.0]])
    # p = (.5, .25, .25); loss = -sum p_k (s_k - lse) = lse - (1 + .25 + .75)
    close(listnet_loss(s, y), lse(2.0, 1.0, 3.0) - 2.0)
    # Rax doctests (softmax_loss): 1.4076059 and 0.68026966.
    s2, y2 = t([[2.0, 1.0, 3.0], [1.0, 0.5, 1.5]]), t([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert listnet_loss(s2, y2, reduction="none").tolist() == pytest.approx(
        [lse(2, 1, 3) - 2, lse(1, 0.5, 1.5) - 1.5], rel=1e-12
    )
    assert lse(2, 1, 3) - 2 == pytest.approx(1.4076059, abs=1e-6)


def test_listnet_zero_labels_uniform_target_and_negative_rejected():
    s = t([[0.0, 1.0, 2.0]])
    close(listnet_loss(s, t([[0.0, 0.0, 0.0]])), lse(0, 1, 2) - 1.0)  # p = 1/3 each
    with pytest.raises(ValueError, match="non-negative"):
        listnet_loss(s, t([[1.0, -1.0, 0.0]]))


def test_plackett_luce_worked_example():
    # label order: item 0 (psi 3), item 2 (psi 2), item 1 (psi 1).
    s, y = t([[1.0, 3.0, 2.0]]), t([[3.0, 1.0, 2.0]])
    expected = (lse(1, 2, 3) - 1.0) + (lse(2, 3) - 2.0) + 0.0
    close(plackett_luce_loss(s, y), expected)


def test_plackett_luce_ties():
    s, y = t([[1.0, 3.0, 2.0]]), t([[2.0, 2.0, 0.0]])
    ignore = (lse(1, 2) - 1.0) + (lse(3, 2) - 3.0)
    breslow = (lse(1, 3, 2) - 1.0) + (lse(1, 3, 2) - 3.0)
    close(plackett_luce_loss(s, y), ignore)
    close(plackett_luce_loss(s, y, ties="breslow"), breslow)
    # An all-tied list: nothing under "ignore"; Breslow: K logsumexp - sum s.
    tied = t([[5.0, 5.0]])
    close(plackett_luce_loss(t([[0.5, -0.5]]), tied), 0.0)
    close(plackett_luce_loss(t([[0.5, -0.5]]), tied, ties="breslow"), 2 * lse(0.5, -0.5))


def test_lambda_weights_and_lipo_worked_example():
    s, y = t([[0.0, 1.0, 2.0]]), t([[0.0, 1.0, 0.3]])
    # ranks by score: item 2 -> 1, item 1 -> 2, item 0 -> 3; 1/D(tau) = 1/log2(1 + tau)
    d1, d2, d3 = 1.0, 1 / math.log2(3), 1 / math.log2(4)
    g0, g1, g2 = 0.0, 1.0, 2**0.3 - 1
    w10 = abs(g1 - g0) * abs(d2 - d3)
    w12 = abs(g1 - g2) * abs(d2 - d1)
    w20 = abs(g2 - g0) * abs(d1 - d3)
    delta = lambda_weights(s, y, scale_by_list_size=False)[0]
    assert delta[1, 0].item() == pytest.approx(w10, rel=1e-12)
    assert delta[1, 2].item() == pytest.approx(w12, rel=1e-12)
    assert delta[2, 0].item() == pytest.approx(w20, rel=1e-12)
    assert torch.equal(delta, delta.T)
    # Rax's test expectation for these inputs: 0.1309, 0.2838, 0.1156 (unscaled).
    assert [w10, w12, w20] == pytest.approx([0.1309, 0.2838, 0.1156], abs=1e-4)
    # preferred pairs (1,0) d=1, (1,2) d=-1, (2,0) d=2; weights x K = 3; mean over 3 pairs
    terms = [3 * w10 * sp(-1.0), 3 * w12 * sp(1.0), 3 * w20 * sp(-2.0)]
    close(lipo_lambda_loss(s, y), sum(terms) / 3)
    close(lipo_lambda_loss(s, y, scale_by_list_size=False, reduction="sum"), sum(terms) / 3)
    # ideal-DCG normalisation: gains divided by g1/1 + g2/log2(3) + g0/2
    ideal = g1 * d1 + g2 * d2 + g0 * d3
    close(lipo_lambda_loss(s, y, normalize=True), sum(terms) / 3 / ideal)
    # natural-log discount 1/ln(1 + tau) scales all weights by ln 2
    close(lipo_lambda_loss(s, y, log_base=math.e), sum(terms) / 3 / math.log(2))


def test_lipo_score_ties_rank_in_order_of_appearance():
    # all scores 0 (a DPO policy at its reference): ranks 1, 2, 3 by position, as Rax.
    s, y = t([[0.0, 0.0, 0.0]]), t([[0.0, 0.0, 1.0]])
    d1, d3 = 1.0, 0.5
    expected = 3 * 1.0 * abs(d3 - d1) * sp(0.0) + 3 * 1.0 * abs(d3 - 1 / math.log2(3)) * sp(0.0)
    close(lipo_lambda_loss(s, y, reduction="sum"), expected)


def test_lipo_no_gradient_through_weights():
    s = t([[0.0, 1.0, 2.0]]).requires_grad_()
    y = t([[0.0, 1.0, 0.3]])
    lipo_lambda_loss(s, y, reduction="sum").backward()
    delta = lambda_weights(s, y)[0]
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # d/ds_1 of sum_pairs Delta_ij softplus(-(s_i - s_j)) with Delta held fixed
    g1 = -delta[1, 0].item() * sig(-1.0) - delta[1, 2].item() * sig(1.0)
    assert s.grad[0, 1].item() == pytest.approx(g1, rel=1e-10)


# ----------------------------------------------------------------------------------- scores


def test_segment_return_scores():
    r = t([[[1.0, 2.0, float("nan")], [0.5, 0.5, 0.5]]])
    m = torch.tensor([[[True, True, False], [True, True, True]]])
    assert segment_return_scores(r, m).tolist() == [[3.0, 1.5]]
    assert segment_return_scores(r[:, 1:]).tolist() == [[1.5]]
    with pytest.raises(ValueError, match="step_mask"):
        segment_return_scores(r, m[..., :2])


def test_log_ratio_scores():
    logp = t([[[-1.0, -2.0, 0.0], [-0.5, -0.5, -9.0]]])
    ref = t([[[-1.5, -1.0, 0.0], [-1.0, -1.0, 7.0]]])
    m = torch.tensor([[[True, True, False], [True, True, False]]])
    # beta * sum (logp - ref): item 0: 0.1 * (0.5 - 1.0), item 1: 0.1 * (0.5 + 0.5)
    out = log_ratio_scores(logp, ref, m, 0.1)
    assert out.tolist()[0] == pytest.approx([-0.05, 0.1], rel=1e-12)
    with pytest.raises(ValueError, match="ref_logp"):
        log_ratio_scores(logp, ref[..., :2], m, 0.1)


# ----------------------------------------------------------------------------------- registry


def test_registry_names_and_aliases():
    assert get_loss("dpo") is pairwise_logistic_loss
    assert get_loss("pairwise_logistic") is get_loss("bt")
    assert get_loss("pairwise_hinge") is get_loss("slic") is pairwise_hinge_loss
    assert get_loss("listmle") is get_loss("dpo_pl") is plackett_luce_loss
    assert get_loss("IPO") is ipo_loss
    assert set(LOSSES) >= {"bt", "slic", "ipo", "listnet", "plackett_luce", "lipo_lambda"}


def test_get_loss_binds_defaults_and_rejects_unknown():
    s, y = t([[2.0, 1.0, 3.0]]), t([[1.0, 0.0, 0.0]])
    close(get_loss("ipo", beta=0.5)(s, y), 2.0)
    close(get_loss("slic", margin=2.0, reduction="sum")(s, y), 1.0 + 3.0)
    with pytest.raises(ValueError, match="loss"):
        get_loss("nope")
    with pytest.raises(ValueError, match="loss_options"):
        get_loss("bt", beta=0.1)


def test_shape_errors_name_the_field():
    s = t([[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"labels: expected shape \[1, 2\].*\[1, 3\]"):
        pairwise_logistic_loss(s, t([[0.0, 1.0, 2.0]]))
    with pytest.raises(ValueError, match="mask"):
        listnet_loss(s, t([[0.0, 1.0]]), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="scores"):
        plackett_luce_loss(torch.zeros(3), t([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="reduction"):
        lipo_lambda_loss(s, t([[0.0, 1.0]]), reduction="avg")


def test_ipo_gradient_vanishes_at_the_target_gap():
    beta = 0.25  # target gap 1 / (2 beta) = 2
    s = t([[2.5, 0.5]]).requires_grad_()
    ipo_loss(s, t([[1.0, 0.0]]), beta=beta).backward()
    assert s.grad.abs().max().item() == 0.0
    s2 = t([[3.5, 0.5]]).requires_grad_()  # gap 3 > 2: IPO pulls the winner back down
    ipo_loss(s2, t([[1.0, 0.0]]), beta=beta).backward()
    assert s2.grad[0].tolist() == pytest.approx([2.0, -2.0], rel=1e-12)  # 2 (3 - 2) = 2
