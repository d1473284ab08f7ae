"""Losses of the CenterPoint head."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def gaussian_focal_loss(logits: Tensor, target: Tensor, *, alpha: float = 2.0,
                        gamma: float = 4.0) -> tuple[Tensor, Tensor]:
    """Penalty-reduced focal loss on a Gaussian-splatted heatmap (CornerNet / CenterNet).

    Positives are the cells where ``target == 1``; negatives near a centre are down-weighted by
    ``(1 - target) ** gamma``, so a near-miss costs little. Computed from logits with
    ``logsigmoid`` (no clamping of probabilities, no log(0)).

    Args:
        logits: (...) raw heatmap; target: same shape, in [0, 1].
    Returns:
        (summed loss, number of positives) -- normalise by the positives of the whole batch.
    """
    pos = target.eq(1).to(logits.dtype)
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    pos_loss = -log_p * (1 - p) ** alpha * pos
    neg_loss = -log_1mp * p ** alpha * (1 - target) ** gamma * (1 - pos)
    return pos_loss.sum() + neg_loss.sum(), pos.sum()


def masked_l1(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Sum of ``weight * |pred - target|`` (weight 0 where a target is unknown)."""
    return (weight * (pred - target).abs()).sum()
