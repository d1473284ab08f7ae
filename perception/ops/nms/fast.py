"""CPU NMS that gives exactly the reference's kept set, faster.

Two savings over :mod:`.reference`: the exact rotated IoU is computed only for same-class pairs
whose circumscribed circles overlap (any other pair has IoU 0, so it cannot pass a threshold
>= 0), with the same elementwise function so every IoU value is bit-identical; and the greedy pass
runs over Python adjacency lists instead of one tensor op per kept box.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .reference import bev_params, class_radius, paired_iou_bev, score_order

_ROWS = 1024


def greedy_from_pairs(n: int, ii: Tensor, jj: Tensor) -> list[int]:
    """Greedy NMS over suppression edges ``ii[k] -> jj[k]`` (positions, ii < jj) in visiting order.
    Returns the kept positions, ascending."""
    adj: dict[int, list[int]] = {}
    for i, j in zip(ii.tolist(), jj.tolist()):
        adj.setdefault(i, []).append(j)
    removed = bytearray(n)
    keep = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        for j in adj.get(i, ()):
            removed[j] = 1
    return keep


def _pairs(mask_fn, n: int, device):
    """All (i, j), i < j, with mask_fn(rows, cols) True, built a block of rows at a time."""
    out_i, out_j = [], []
    cols = torch.arange(n, device=device)
    for s in range(0, n, _ROWS):
        rows = torch.arange(s, min(n, s + _ROWS), device=device)
        m = mask_fn(rows) & (cols[None, :] > rows[:, None])
        i, j = torch.nonzero(m, as_tuple=True)
        out_i.append(rows[i])
        out_j.append(j)
    if not out_i:
        e = torch.zeros(0, dtype=torch.int64, device=device)
        return e, e
    return torch.cat(out_i), torch.cat(out_j)


def nms_bev_fast(boxes, scores: Tensor, labels: Tensor | None, iou_threshold: float,
                 max_out: int | None = None) -> Tensor:
    """Same contract and result as :func:`.reference.nms_bev_reference`."""
    p = bev_params(boxes).to(torch.float64)
    n = p.shape[0]
    order = score_order(scores)
    ps = p[order]
    ls = labels[order] if labels is not None else None
    circ = 0.5 * torch.hypot(ps[:, 2], ps[:, 3])
    xy = ps[:, :2]

    def candidates(rows):
        d2 = ((xy[rows, None, :] - xy[None, :, :]) ** 2).sum(-1)
        m = d2 < (circ[rows, None] + circ[None, :]) ** 2
        if ls is not None:
            m &= ls[rows, None] == ls[None, :]
        return m

    ii, jj = _pairs(candidates, n, p.device)
    iou = paired_iou_bev(ps[ii], ps[jj])
    hit = iou > iou_threshold
    keep = torch.tensor(greedy_from_pairs(n, ii[hit], jj[hit]), dtype=torch.int64)
    keep = order[keep.to(order.device)]
    return keep[:max_out] if max_out is not None else keep


def circle_nms_fast(centers, scores: Tensor, labels: Tensor | None, radius,
                    max_out: int | None = None) -> Tensor:
    """Same contract and result as :func:`.reference.circle_nms_reference`."""
    xy = (centers.tensor if hasattr(centers, "tensor") else centers)[:, :2].to(torch.float64)
    n = xy.shape[0]
    order = score_order(scores)
    xs = xy[order]
    r = class_radius(labels, radius, n, xy.device)[order]
    ls = labels[order] if labels is not None else None

    def candidates(rows):
        d2 = (xs[rows, None, 0] - xs[None, :, 0]) ** 2 + (xs[rows, None, 1] - xs[None, :, 1]) ** 2
        m = d2 <= r[rows, None] ** 2
        if ls is not None:
            m &= ls[rows, None] == ls[None, :]
        return m

    ii, jj = _pairs(candidates, n, xy.device)
    keep = torch.tensor(greedy_from_pairs(n, ii, jj), dtype=torch.int64)
    keep = order[keep.to(order.device)]
    return keep[:max_out] if max_out is not None else keep
