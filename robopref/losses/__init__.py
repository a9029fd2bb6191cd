"""The shared pairwise/listwise preference loss core.

Every loss is a function ``loss_fn(scores [B, K], labels [B, K], mask [B, K] | None, **options)``
returning a scalar tensor: ``scores`` are the model's item scores (segment returns of a reward
model, ``beta * log-ratio`` of a policy), ``labels`` graded preferences (higher = preferred,
equal = tie), ``mask`` False on padding items. One core serves reward models, robot policies and
language policies::

    from robopref.losses import get_loss, segment_return_scores
    loss_fn = get_loss("lipo_lambda")
    loss = loss_fn(segment_return_scores(rewards, step_mask), labels, mask)

Registry names (aliases in brackets): ``bt`` (``dpo``, ``pairwise_logistic``), ``slic``
(``pairwise_hinge``), ``ipo``, ``listnet``, ``plackett_luce`` (``listmle``, ``dpo_pl``),
``lipo_lambda``. Formulas, sources and reductions: docs/rooms/losses.md and each function's
docstring. A NaN or infinite score or label at a valid (unmasked) item raises ``ValueError``
(``check_finite=False`` skips that check). TRL's IPO is ``ipo_loss`` on the token-averaged
log-ratios ``log_ratio_scores(..., average=True)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch

from robopref.losses.listwise import (
    lambda_weights,
    lipo_lambda_loss,
    listnet_loss,
    plackett_luce_loss,
)
from robopref.losses.pairwise import ipo_loss, pairwise_hinge_loss, pairwise_logistic_loss
from robopref.losses.scores import log_ratio_scores, segment_return_scores

LossFn = Callable[..., torch.Tensor]

LOSSES: dict[str, LossFn] = {
    "bt": pairwise_logistic_loss,
    "dpo": pairwise_logistic_loss,
    "pairwise_logistic": pairwise_logistic_loss,
    "slic": pairwise_hinge_loss,
    "pairwise_hinge": pairwise_hinge_loss,
    "ipo": ipo_loss,
    "listnet": listnet_loss,
    "plackett_luce": plackett_luce_loss,
    "listmle": plackett_luce_loss,
    "dpo_pl": plackett_luce_loss,
    "lipo_lambda": lipo_lambda_loss,
}
"""Registry name (and alias) -> loss function."""


def get_loss(name: str, **defaults) -> LossFn:
    """The loss registered as ``name`` with ``defaults`` bound as keyword options.

    ``get_loss("ipo", beta=0.5)(scores, labels, mask)`` equals ``ipo_loss(scores, labels, mask,
    beta=0.5)``; options given at call time override the bound ones (``functools.partial``).

    Raises:
        ValueError: unknown name, or an option the loss does not take.
    """
    key = str(name).lower().replace("-", "_")
    if key not in LOSSES:
        raise ValueError(f"loss: expected one of {sorted(LOSSES)}, found {name!r}")
    fn = LOSSES[key]
    params = inspect.signature(fn).parameters
    options = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(defaults) - set(options))
    if unknown:
        raise ValueError(
            f"loss_options: loss {name!r} takes options {options}, found unknown {unknown}"
        )
    return functools.partial(fn, **defaults) if defaults else fn


__all__ = [
    "LOSSES",
    "get_loss",
    "ipo_loss",
    "lambda_weights",
    "lipo_lambda_loss",
    "listnet_loss",
    "log_ratio_scores",
    "pairwise_hinge_loss",
    "pairwise_logistic_loss",
    "plackett_luce_loss",
    "segment_return_scores",
]
