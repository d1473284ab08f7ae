"""Vectorized greedy center-distance matching: the devkit's ``accumulate`` for all classes at once.

The devkit's rule (nuscenes/eval/detection/algo.py, ``accumulate``), per class and threshold:
  - predictions are visited by descending score; equal scores by descending position in
    ``pred_boxes.all`` (it sorts (score, index) pairs ascending and reverses the list);
  - each one looks at the ground-truth boxes of its sample and class not yet taken, and picks the
    closest (strict ``<`` over ascending GT position, so equal distances go to the first box);
  - it is a true positive when that distance is ``< dist_th`` and then takes that box.

Only pairs closer than the threshold can ever match, and a prediction whose closest free box is
at or beyond it is a false positive whichever box that is. So the greedy pass runs over the sparse
set of candidate pairs (d < th) alone. Different (sample, class) groups never compete for a box,
so step k handles the k-th candidate prediction of every group together: the number of numpy
steps is the largest number of candidate predictions in one group, not the number of boxes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .results import BoxArrays

# Window pairs (prediction, GT of its group within the x window) are built in chunks of about this
# many, to bound memory whatever the input (a crowded sample can pair every box with every box).
_PAIR_CHUNK = 1 << 22


def sort_predictions(pred: BoxArrays) -> np.ndarray:
    """Prediction rows in the devkit's visiting order, grouped by class (in class-index order).

    Within a class: descending score, ties by descending row (the devkit's
    ``sorted((v, i) ...)[::-1]``); -0.0 and 0.0 compare equal in both.
    """
    parts = []
    for c in np.unique(pred.label):
        # Rows of the class reversed, then a stable sort by descending score: equal scores keep
        # the reversed, i.e. descending, row order. One sort per class is cheaper than sorting
        # all rows by score and then again by class.
        rows = np.flatnonzero(pred.label == c)[::-1]
        parts.append(rows[np.argsort(-pred.score[rows], kind="stable")])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def candidate_pairs(gt: BoxArrays, pred: BoxArrays, pred_to_gt_sample: np.ndarray,
                    max_dist: float, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (pred, gt, distance) of the same sample and class with distance < max_dist.

    The distance is the devkit's center_distance, ``norm(pred.xy - gt.xy)``; numpy's norm of a
    2-vector is sqrt(dx*dx + dy*dy) to the bit, which is what is computed here.

    To avoid pairing every prediction with every same-class box of its sample (18 M pairs at
    val scale), ground truth is sorted by (group, x) and each prediction only looks at the boxes
    of its group whose x lies within max_dist (plus a margin for the rounding of the sort key);
    the exact distance then decides, so the window only has to be wide enough, never exact.
    """
    g_group = gt.sample * n_classes + gt.label
    p_group = pred_to_gt_sample * n_classes + pred.label
    g_x, g_y = gt.translation[:, 0], gt.translation[:, 1]
    p_x, p_y = pred.translation[:, 0], pred.translation[:, 1]
    # Boxes at an infinite position are never within a finite distance of anything.
    g_ok = np.isfinite(g_x) & np.isfinite(g_y)
    p_ok = np.isfinite(p_x) & np.isfinite(p_y) & (pred_to_gt_sample >= 0)
    empty = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    if not g_ok.any() or not p_ok.any():
        return empty
    x_lo = min(g_x[g_ok].min(), p_x[p_ok].min())
    span = max(g_x[g_ok].max(), p_x[p_ok].max()) - x_lo + 2 * max_dist + 1.0
    # One float key per box: group * span + x; groups are spaced by more than the x range, so a
    # window never reaches into the next group. Rounding of the key is far below the margin.
    g_key = g_group * span + (g_x - x_lo)
    p_key = p_group * span + (p_x - x_lo)
    margin = 1e-3 + 1e-12 * float(np.abs(p_key[p_ok]).max())
    g_idx = np.flatnonzero(g_ok)
    g_order = g_idx[np.argsort(g_key[g_idx], kind="stable")]
    g_key_sorted = g_key[g_order]
    lo = np.searchsorted(g_key_sorted, p_key - (max_dist + margin), side="left")
    hi = np.searchsorted(g_key_sorted, p_key + (max_dist + margin), side="right")
    counts = np.where(p_ok, hi - lo, 0)

    out_p, out_g, out_d = [], [], []
    ends = np.cumsum(counts)
    start, n = 0, len(pred)
    while start < n:
        # Take predictions until the chunk holds about _PAIR_CHUNK pairs (bounded memory).
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _PAIR_CHUNK, side="right")), start + 1)
        c = counts[start:stop]
        total = int(c.sum())
        if total:
            p = np.repeat(np.arange(start, stop, dtype=np.int64), c)
            offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(c) - c, c)
            g = g_order[lo[p] + offs]
            same = g_group[g] == p_group[p]          # the margin may reach a neighbour group
            p, g = p[same], g[same]
            dx = p_x[p] - g_x[g]
            dy = p_y[p] - g_y[g]
            d = np.sqrt(dx * dx + dy * dy)
            close = d < max_dist
            out_p.append(p[close])
            out_g.append(g[close])
            out_d.append(d[close])
        start = stop
    if not out_p:
        return empty
    return np.concatenate(out_p), np.concatenate(out_g), np.concatenate(out_d)


def greedy_match(n_pred: int, n_gt: int, pair_p: np.ndarray, pair_g: np.ndarray, pair_d: np.ndarray,
                 rank: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Greedy matching on candidate pairs; returns the matched GT row per prediction (-1: none).

    ``rank``: each prediction's position in the visiting order; ``group``: its (sample, class)
    group. Pairs must already be restricted to the threshold.
    """
    match = np.full(n_pred, -1, np.int64)
    if pair_p.size == 0:
        return match
    # Candidate predictions in visiting order, numbered 0, 1, ... within their group.
    cand = np.unique(pair_p)
    cand = cand[np.lexsort((rank[cand], group[cand]))]
    cgroup = group[cand]
    is_start = np.ones(cand.size, bool)
    is_start[1:] = cgroup[1:] != cgroup[:-1]
    start_pos = np.flatnonzero(is_start)
    step_of = np.empty(n_pred, np.int64)
    step_of[cand] = np.arange(cand.size) - np.repeat(start_pos, np.diff(np.append(start_pos, cand.size)))

    # Pairs by step, then by prediction, then nearest first, equal distances by GT position.
    order = np.lexsort((pair_g, pair_d, rank[pair_p], step_of[pair_p]))
    pp, gg = pair_p[order], pair_g[order]
    bounds = np.searchsorted(step_of[pp], np.arange(int(step_of[pp[-1]]) + 2))
    taken = np.zeros(n_gt, bool)
    for k in range(bounds.size - 1):
        s, e = bounds[k], bounds[k + 1]
        p, g = pp[s:e], gg[s:e]
        free = ~taken[g]
        p, g = p[free], g[free]
        if p.size == 0:
            continue
        first = np.ones(p.size, bool)           # the nearest free box of each prediction
        first[1:] = p[1:] != p[:-1]
        match[p[first]] = g[first]
        taken[g[first]] = True
    return match


def match_all(gt: BoxArrays, pred: BoxArrays, dist_ths: Sequence[float],
              n_classes: int) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Match every class at every threshold.

    Returns the visiting order (``sort_predictions``) and, per threshold, the matched GT row of
    each prediction (-1 for false positives).
    """
    gt_sample_of = {t: i for i, t in enumerate(gt.sample_tokens)}
    pred_to_gt = np.array([gt_sample_of.get(t, -1) for t in pred.sample_tokens], np.int64)
    pred_to_gt_sample = pred_to_gt[pred.sample] if len(pred) else np.zeros(0, np.int64)
    order = sort_predictions(pred)
    rank = np.empty(len(pred), np.int64)
    rank[order] = np.arange(len(pred))
    group = pred_to_gt_sample * n_classes + pred.label

    pair_p, pair_g, pair_d = candidate_pairs(gt, pred, pred_to_gt_sample, max(dist_ths), n_classes)
    matches = {}
    for th in dist_ths:
        keep = pair_d < th
        matches[th] = greedy_match(len(pred), len(gt), pair_p[keep], pair_g[keep], pair_d[keep],
                                   rank, group)
    return order, matches
