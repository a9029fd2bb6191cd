"""Input checks, pair construction and reductions shared by every loss of the core.

Conventions (all losses):
    scores: ``[B, K]`` float tensor, one score per item (higher = the model prefers the item).
    labels: ``[B, K]`` graded labels psi (higher = preferred, equal = tie); values under a
        ``False`` mask entry are ignored (they may be NaN).
    mask: ``[B, K]`` bool (``False`` = padding item) or ``None`` (every item is valid).

Masked items are removed *exactly*: their scores and labels are replaced by 0 before any
arithmetic (so NaN/inf padding cannot leak into values or gradients), and every pair, rank and
normaliser is computed over valid items only.
"""

from __future__ import annotations

from typing import Literal

import torch

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)}"
    return f"{type(x).__name__}"


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, found {reduction!r}")


def check_inputs(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    name: str = "loss",
    check_finite: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate shapes and return ``(scores, labels, mask)`` with masked entries set to 0.

    ``labels`` is cast to the dtype and device of ``scores``; ``mask`` becomes a bool tensor
    (all ``True`` when ``None``). With ``check_finite`` (the default of every loss), a NaN or
    infinite score or label at a *valid* item raises ``ValueError`` naming ``name`` and the
    first such ``[b, k]`` (see :func:`check_finite_values`); masked items may hold anything.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or not scores.is_floating_point():
        raise ValueError(
            f"scores: expected a float tensor of shape [B, K], found {_describe(scores)}"
        )
    shape = list(scores.shape)
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if list(labels.shape) != shape:
        raise ValueError(
            f"labels: expected shape {shape} (the shape of scores [B, K]), found {list(labels.shape)}"
        )
    labels = labels.to(device=scores.device, dtype=scores.dtype)
    if mask is None:
        mask = torch.ones(shape, dtype=torch.bool, device=scores.device)
        if check_finite:
            check_finite_values(name, scores, labels, mask)
        return scores, labels, mask
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(mask)
    if list(mask.shape) != shape:
        raise ValueError(
            f"mask: expected shape {shape} (the shape of scores [B, K]), found {list(mask.shape)}"
        )
    mask = mask.to(scores.device)
    mask = mask if mask.dtype == torch.bool else mask != 0
    zero = scores.new_zeros(())
    scores, labels = torch.where(mask, scores, zero), torch.where(mask, labels, zero)
    if check_finite:
        check_finite_values(name, scores, labels, mask)
    return scores, labels, mask


def check_finite_values(
    name: str, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> None:
    """Raise ``ValueError`` if a valid entry of ``scores`` or ``labels`` ``[B, K]`` is NaN/inf.

    Masked entries must already be replaced by 0 (as :func:`check_inputs` does), so one
    ``isfinite(...).all()`` over both tensors decides; that is a single host sync per loss call
    (pass ``check_finite=False`` to a loss to skip it, e.g. in a CUDA-graph-captured step).
    The slow search for the first offending ``[b, k]`` runs only on failure.
    """
    ok = torch.isfinite(scores).all() & torch.isfinite(labels).all()
    if bool(ok):
        return
    for field, x in (("scores", scores), ("labels", labels)):
        bad = ~torch.isfinite(x) & mask
        if bool(bad.any()):
            b, k = (int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(
                f"{name}: {field}[{b}, {k}] (list {b}, item {k}) is {x[b, k].item()} at a valid "
                f"(unmasked) item, {int(bad.sum())} such value(s) in all; expected finite values "
                "(only items with mask False may hold NaN/inf)"
            )


def preferred_pairs(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score gaps of every ordered item pair and which pairs are preferred.

    Returns:
        d: ``[B, K * K]`` with ``d[b, i * K + j] = s_i - s_j``.
        valid: ``[B, K * K]`` bool, True where both items are valid and ``psi_i > psi_j``
            (ties and the diagonal excluded).

    A broadcast ``[B, K, K]`` grid, flattened. (Gathering only the K(K-1)/2 unordered pairs with
    ``index_select`` halves the work, ~1.6x faster forward + backward at K = 8 on CPU, but
    changes the floating-point summation order; the end-to-end language-policy tests flipped
    under that rounding-level change, see docs/rooms/losses.md.)
    """
    B, K = scores.shape
    d = (scores[:, :, None] - scores[:, None, :]).reshape(B, K * K)
    both = mask[:, :, None] & mask[:, None, :]
    valid = ((labels[:, :, None] > labels[:, None, :]) & both).reshape(B, K * K)
    return d, valid


def reduce_pairs(terms: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-pair terms ``[B, P]`` (P pairs per list) over the ``valid`` pairs.

    ``mean``: sum over valid pairs / number of valid pairs, pooled over the batch (Rax's
    ``reduce_fn=jnp.mean``); 0 when there is no valid pair. ``sum``: sum over valid pairs.
    ``none``: ``[B]`` per-list sums.
    """
    terms = torch.where(valid, terms, terms.new_zeros(()))
    if reduction == "none":
        return terms.sum(1)
    total = terms.sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp(min=1).to(terms.dtype)


def reduce_lists(per_list: torch.Tensor, counted: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-list losses ``[B]`` over the lists marked ``counted`` ``[B]`` bool.

    ``mean``: mean over counted lists (0 when none is); ``sum``: their sum; ``none``: ``[B]``
    with 0 for lists that are not counted.
    """
    per_list = torch.where(counted, per_list, per_list.new_zeros(()))
    if reduction == "none":
        return per_list
    total = per_list.sum()
    if reduction == "sum":
        return total
    return total / counted.sum().clamp(min=1).to(per_list.dtype)
