"""No silent NaN (issue 13, item 4) and TRL's length-normalised IPO (issue 13, item 5)."""

import math

import pytest
import torch

from robopref.losses import get_loss, ipo_loss, lambda_weights, log_ratio_scores

# Every loss function of the core, by registry name (aliases share the function).
NAMES = ["bt", "slic", "ipo", "listnet", "plackett_luce", "lipo_lambda"]
FUNCTION = {
    "bt": "pairwise_logistic_loss",
    "slic": "pairwise_hinge_loss",
    "ipo": "ipo_loss",
    "listnet": "listnet_loss",
    "plackett_luce": "plackett_luce_loss",
    "lipo_lambda": "lipo_lambda_loss",
}


def _lists():
    scores = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], dtype=torch.float64)
    labels = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    return scores, labels


# ------------------------------------------------------------------------------ NaN (item 4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", NAMES)
def test_a_non_finite_valid_score_raises_naming_loss_list_and_item(name, bad):
    scores, labels = _lists()
    scores[1, 2] = bad
    with pytest.raises(ValueError, match=rf"{FUNCTION[name]}: scores\[1, 2\] \(list 1, item 2\)"):
        get_loss(name)(scores, labels)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"scores\[1, 2\]"):  # with an all-True mask too
        get_loss(name)(scores, labels, mask)


@pytest.mark.parametrize("name", NAMES)
def test_a_nan_valid_label_raises(name):
    scores, labels = _lists()
    labels[0, 1] = float("nan")
    with pytest.raises(ValueError, match=rf"{FUNCTION[name]}: labels\[0, 1\]"):
        get_loss(name)(scores, labels)


@pytest.mark.parametrize("name", NAMES)
def test_nan_under_the_mask_is_still_allowed(name):
    scores, labels = _lists()
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[0, 2] = False
    clean = get_loss(name)(scores, labels, mask)
    scores[0, 2], labels[0, 2] = float("nan"), float("nan")
    assert get_loss(name)(scores, labels, mask).item() == clean.item()
    assert math.isfinite(clean.item())


def test_first_offending_entry_and_count_are_reported():
    scores, labels = _lists()
    scores[0, 1] = scores[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"scores\[0, 1\] .* is nan .*2 such value\(s\)"):
        get_loss("bt")(scores, labels)


def test_soft_labels_and_lambda_weights_are_checked_too():
    s = torch.tensor([[0.3, float("nan")]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"pairwise_logistic_loss: scores\[0, 1\]"):
        get_loss("bt")(s, torch.tensor([[0.8, 0.2]]), soft=True)
    with pytest.raises(ValueError, match=r"lambda_weights: scores\[0, 1\]"):
        lambda_weights(s, torch.tensor([[1.0, 0.0]]))


def test_check_finite_false_skips_the_check():
    scores, labels = _lists()
    scores[1, 2] = float("nan")
    assert math.isnan(get_loss("bt", check_finite=False)(scores, labels).item())


# ------------------------------------------------------------------------------ IPO (item 5)


def _trl_ipo(pairs, beta):
    """TRL ``DPOTrainer`` with ``loss_type="ipo"``, written out by hand from its source.

    ``get_batch_logps(..., average_log_prob=True)`` gives each completion's mean per-token
    log-probability over its label tokens (``(per_token_logps * loss_mask).sum(-1) /
    loss_mask.sum(-1)``), for the policy and the reference model alike; ``dpo_loss`` then takes
    ``logits = (pi_chosen - pi_rejected) - (ref_chosen - ref_rejected)`` and
    ``losses = (logits - 1 / (2 * beta)) ** 2``, and the trainer reports ``losses.mean()``.
    ``pairs``: ``[(chosen, rejected)]`` with each side a list of ``(logp, ref_logp)`` per token.
    """

    def mean(xs):
        return sum(xs) / len(xs)

    losses = []
    for chosen, rejected in pairs:
        pi_c, ref_c = mean([a for a, _ in chosen]), mean([b for _, b in chosen])
        pi_r, ref_r = mean([a for a, _ in rejected]), mean([b for _, b in rejected])
        logits = (pi_c - pi_r) - (ref_c - ref_r)
        losses.append((logits - 1 / (2 * beta)) ** 2)
    return sum(losses) / len(losses)


def _trl_ipo_case():
    """Two pairs whose completions have different token counts (3 vs 5, 4 vs 2), with prompt /
    padding tokens in the tensors; in the second list the chosen completion is item 1."""
    T = 7
    chosen0 = [(-1.0, -1.5), (-0.5, -0.25), (-2.0, -1.0)]
    rejected0 = [(-0.2, -0.4), (-1.0, -0.5), (-3.0, -2.0), (-0.1, -0.3), (-0.6, -0.9)]
    chosen1 = [(-0.3, -0.9), (-0.7, -0.2), (-1.1, -1.6), (-0.4, -0.4)]
    rejected1 = [(-2.5, -1.5), (-0.8, -0.3)]
    logp = torch.full((2, 2, T), float("nan"), dtype=torch.float64)  # masked: anything
    ref = torch.full((2, 2, T), 9.0, dtype=torch.float64)
    mask = torch.zeros(2, 2, T, dtype=torch.bool)
    # (list, item, first completion token after the prompt, tokens)
    for b, k, offset, tokens in [
        (0, 0, 2, chosen0), (0, 1, 1, rejected0), (1, 1, 3, chosen1), (1, 0, 0, rejected1),
    ]:  # fmt: skip
        for i, (a, r) in enumerate(tokens):
            logp[b, k, offset + i], ref[b, k, offset + i] = a, r
            mask[b, k, offset + i] = True
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    return logp, ref, mask, labels, [(chosen0, rejected0), (chosen1, rejected1)]


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_on_averaged_log_ratios_is_trls_ipo(beta):
    logp, ref, mask, labels, pairs = _trl_ipo_case()
    expected = _trl_ipo(pairs, beta)
    h = log_ratio_scores(logp, ref, mask, average=True)
    assert ipo_loss(h, labels, beta=beta).item() == pytest.approx(expected, rel=1e-12)
    assert get_loss("ipo", beta=beta)(h, labels).item() == pytest.approx(expected, rel=1e-12)
    # beta folded into the scores (the DPO route) gives the same number
    s = log_ratio_scores(logp, ref, mask, beta, average=True)
    scaled = ipo_loss(s, labels, beta=beta, scores_include_beta=True)
    assert scaled.item() == pytest.approx(expected, rel=1e-12)
    # ...and summed log-ratios do not: the completions differ in length
    summed = ipo_loss(log_ratio_scores(logp, ref, mask), labels, beta=beta)
    assert abs(summed.item() - expected) > 0.1


def test_average_divides_by_each_items_token_count():
    logp, ref, mask, _, pairs = _trl_ipo_case()
    h = log_ratio_scores(logp, ref, mask, average=True)
    (c0, r0), (c1, r1) = pairs
    for (b, k), tokens in {(0, 0): c0, (0, 1): r0, (1, 1): c1, (1, 0): r1}.items():
        want = sum(a - r for a, r in tokens) / len(tokens)
        assert h[b, k].item() == pytest.approx(want, rel=1e-12)
    # no mask: every one of the T tokens counts
    x = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]])
    assert log_ratio_scores(x, torch.zeros_like(x), average=True).tolist() == [[2.0, 2.0]]
    # an item without a valid token (padding) gets 0, not NaN
    none = torch.zeros(1, 2, 3, dtype=torch.bool)
    none[0, 0] = True
    out = log_ratio_scores(x, torch.zeros_like(x), none, 0.5, average=True)
    assert out.tolist() == [[1.0, 0.0]]
