"""Pure-torch rotated BEV IoU and NMS: the truth for the fast paths.

Rotated IoU without sorting polygon vertices: by Green's theorem the area of the intersection of
two convex polygons is half the sum of ``cross(P, Q)`` over its boundary segments, and that
boundary is the part of each box's edges lying inside the other box. Each of the 8 edges is
clipped to the other box with Liang-Barsky, in that box's own frame (where it is axis-aligned), and
contributions are referred to one origin. Elementwise only, so the Triton kernel runs the same
algorithm.

Shared edges are the degenerate case: an edge of A lying exactly on an edge of B would be counted
twice (or not at all). Rule: such a segment counts once, from A, when both outward normals agree,
and never when they oppose (the boxes only touch there). Relative rotations within 1e-6 rad of a
multiple of pi/2 are snapped to it so that "parallel" is decided exactly, and parallel edges
within EDGE_EPS of each other count as shared.

NMS order: boxes are visited by descending score, ties broken by ascending input index (a stable
sort), so the kept set is deterministic.
"""
from __future__ import annotations

import torch
from torch import Tensor

SNAP = 1e-6
# Parallel edges closer than this (metres) are one shared edge. Without a tolerance, rounding in
# the centre offsets (~1e-16 m in float64, ~1e-6 m in the float32 kernel) would count a shared edge
# twice or not at all; merging edges this close changes an area by at most ~EDGE_EPS * length.
EDGE_EPS = 1e-5
# Corners of the unit footprint in counter-clockwise order; edge k joins corner k to k+1 and has
# outward normal _NORMALS[k]: right (+x), top (+y), left (-x), bottom (-y).
_CORNERS = ((1.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0))
_NORMALS = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))


def bev_params(boxes) -> Tensor:
    """(N, 7+) boxes ``x, y, z, l, w, h, yaw, ...`` (``Boxes3D`` layout) or a ``Boxes3D`` ->
    (N, 5) ``x, y, l, w, yaw``."""
    t = boxes.tensor if hasattr(boxes, "tensor") else boxes
    if t.ndim != 2 or t.shape[1] < 7:
        raise ValueError(f"boxes must be (N, 7+) x, y, z, l, w, h, yaw, got {tuple(t.shape)}")
    return t[:, [0, 1, 3, 4, 6]]


def _rel_rotation(yaw_a: Tensor, yaw_b: Tensor):
    """cos/sin of yaw_a - yaw_b, snapped to exact axis values near multiples of pi/2."""
    rel = yaw_a - yaw_b
    c, s = torch.cos(rel), torch.sin(rel)
    near_c = s.abs() < SNAP
    near_s = c.abs() < SNAP
    c2 = torch.where(near_c, torch.sign(c), torch.where(near_s, torch.zeros_like(c), c))
    s2 = torch.where(near_s, torch.sign(s), torch.where(near_c, torch.zeros_like(s), s))
    return c2, s2


def _clip_sum(tx, ty, c, s, ha, wa, hb, wb, ox, oy, keep_shared: bool):
    """Sum of cross(P(t0) - O, P(t1) - O) over the 4 edges of box A clipped to box B, in B's frame.

    (tx, ty): A's centre in B's frame; (c, s): rotation of A relative to B; ha, wa: A's half
    extents; hb, wb: B's half extents; (ox, oy): the common origin O in B's frame. All (P,).
    """
    total = torch.zeros_like(tx)
    half_b = (hb, wb, hb, wb)
    for k in range(4):
        (a0, b0), (a1, b1) = _CORNERS[k], _CORNERS[(k + 1) % 4]
        x0 = tx + c * (a0 * ha) - s * (b0 * wa)
        y0 = ty + s * (a0 * ha) + c * (b0 * wa)
        x1 = tx + c * (a1 * ha) - s * (b1 * wa)
        y1 = ty + s * (a1 * ha) + c * (b1 * wa)
        dx, dy = x1 - x0, y1 - y0
        # The edge's outward normal in B's frame.
        nxk, nyk = _NORMALS[k]
        enx, eny = c * nxk - s * nyk, s * nxk + c * nyk
        t0 = torch.zeros_like(tx)
        t1 = torch.ones_like(tx)
        empty = torch.zeros_like(tx, dtype=torch.bool)
        for j in range(4):
            nx, ny = _NORMALS[j]
            f0 = nx * x0 + ny * y0 - half_b[j]
            den = nx * dx + ny * dy
            par = den == 0
            same = (nx * enx + ny * eny) > 0
            on_line_ok = same if keep_shared else torch.zeros_like(same)
            on_line = par & (f0.abs() <= EDGE_EPS)
            empty = empty | (par & (f0 > EDGE_EPS)) | (on_line & ~on_line_ok)
            t = -f0 / torch.where(par, torch.ones_like(den), den)
            t1 = torch.where(~par & (den > 0), torch.minimum(t1, t), t1)
            t0 = torch.where(~par & (den < 0), torch.maximum(t0, t), t0)
        ok = ~empty & (t0 < t1)
        px, py = x0 + t0 * dx, y0 + t0 * dy
        qx, qy = x0 + t1 * dx, y0 + t1 * dy
        px, py, qx, qy = px - ox, py - oy, qx - ox, qy - oy
        total = total + torch.where(ok, px * qy - py * qx, torch.zeros_like(tx))
    return total


def paired_iou_bev(a: Tensor, b: Tensor) -> Tensor:
    """IoU of box a[i] with box b[i] in bird's-eye view.

    Args:
        a, b: (P, 5) ``x, y, l, w, yaw`` (metres, radians).
    Returns:
        (P,) IoU in [0, 1], same dtype as a (computed in float64).
    """
    out_dtype = a.dtype
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    xa, ya, la, wa, ra = a.unbind(1)
    xb, yb, lb, wb, rb = b.unbind(1)
    c, s = _rel_rotation(ra, rb)
    # A in B's frame (origin B's centre).
    dx, dy = xa - xb, ya - yb
    cb, sb = torch.cos(rb), torch.sin(rb)
    tx, ty = cb * dx + sb * dy, -sb * dx + cb * dy
    zero = torch.zeros_like(tx)
    # The common origin of both boundary chains is B's centre: (0, 0) in B's frame, (ux, uy) in
    # A's frame.
    sum_a = _clip_sum(tx, ty, c, s, la / 2, wa / 2, lb / 2, wb / 2, zero, zero, keep_shared=True)
    ca, sa = torch.cos(ra), torch.sin(ra)
    ux, uy = -(ca * dx + sa * dy), -(-sa * dx + ca * dy)
    # B in A's frame: rotation by -(yaw_a - yaw_b), i.e. (c, -s).
    sum_b = _clip_sum(ux, uy, c, -s, lb / 2, wb / 2, la / 2, wa / 2, ux, uy, keep_shared=False)
    inter = 0.5 * (sum_a + sum_b)
    inter = inter.clamp(min=0)
    union = la * wa + lb * wb - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
    return iou.clamp(max=1.0).to(out_dtype)


def pairwise_iou_bev(a: Tensor, b: Tensor, chunk: int = 1 << 18) -> Tensor:
    """(N, 5) x (M, 5) ``x, y, l, w, yaw`` -> (N, M) BEV IoU, in chunks of pairs."""
    n, m = a.shape[0], b.shape[0]
    out = torch.empty(n * m, dtype=a.dtype, device=a.device)
    ii = torch.arange(n, device=a.device).repeat_interleave(m)
    jj = torch.arange(m, device=a.device).repeat(n)
    for s0 in range(0, n * m, chunk):
        sl = slice(s0, s0 + chunk)
        out[sl] = paired_iou_bev(a[ii[sl]], b[jj[sl]])
    return out.view(n, m)


def score_order(scores: Tensor) -> Tensor:
    """Visiting order: descending score, ties by ascending index (stable)."""
    return torch.sort(scores, descending=True, stable=True).indices


def greedy_from_mask(suppress: Tensor) -> Tensor:
    """Greedy NMS on a (N, N) bool matrix in visiting order (row i suppresses j > i where True).

    Returns (K,) int64 positions (in visiting order) of the kept boxes, ascending.
    """
    n = suppress.shape[0]
    removed = torch.zeros(n, dtype=torch.bool, device=suppress.device)
    upper = torch.triu(suppress, diagonal=1)
    keep = []
    i = 0
    # A loop over kept boxes only: each step jumps to the next box nobody suppressed.
    while True:
        rest = torch.nonzero(~removed[i:])
        if rest.numel() == 0:
            break
        i = i + int(rest[0, 0])
        keep.append(i)
        removed |= upper[i]
        i += 1
        if i >= n:
            break
    return torch.tensor(keep, dtype=torch.int64, device=suppress.device)


def _finish(order: Tensor, kept_pos: Tensor, max_out):
    keep = order[kept_pos]
    return keep[:max_out] if max_out is not None else keep


def nms_bev_reference(boxes, scores: Tensor, labels: Tensor | None, iou_threshold: float,
                      max_out: int | None = None) -> Tensor:
    """Plain rotated NMS: dense pairwise IoU of all boxes, then greedy.

    Args:
        boxes: ``Boxes3D`` or (N, 7+) ``x, y, z, l, w, h, yaw, ...``.
        scores: (N,). labels: (N,) int class ids (None: one class); boxes of different classes
            never suppress each other.
        iou_threshold: a box is suppressed by a kept one when their BEV IoU > threshold.
    Returns:
        (K,) int64 indices of kept boxes, by descending score (ties: lower index first).
    """
    p = bev_params(boxes)
    order = score_order(scores)
    ps = p[order]
    sup = pairwise_iou_bev(ps, ps) > iou_threshold
    if labels is not None:
        ls = labels[order]
        sup &= ls[:, None] == ls[None, :]
    return _finish(order, greedy_from_mask(sup), max_out)


def class_radius(labels: Tensor | None, radius, n: int, device) -> Tensor:
    """Per-box radius (N,) float64 from a scalar or a per-class sequence indexed by label."""
    if isinstance(radius, (int, float)):
        return torch.full((n,), float(radius), dtype=torch.float64, device=device)
    r = torch.as_tensor(radius, dtype=torch.float64, device=device)
    if labels is None:
        raise ValueError("a per-class radius needs labels")
    return r[labels.long()]


def circle_nms_reference(centers: Tensor, scores: Tensor, labels: Tensor | None, radius,
                         max_out: int | None = None) -> Tensor:
    """Circle NMS (CenterPoint): a kept box suppresses same-class boxes whose centre lies within
    ``radius`` metres (distance <= radius).

    Args:
        centers: (N, 2+) x, y metres (extra columns ignored; a Boxes3D tensor works).
        scores: (N,). labels: (N,) int or None. radius: metres, scalar or per class (by label).
    Returns:
        (K,) int64 kept indices, by descending score (ties: lower index first).
    """
    xy = (centers.tensor if hasattr(centers, "tensor") else centers)[:, :2].to(torch.float64)
    n = xy.shape[0]
    order = score_order(scores)
    xs = xy[order]
    r = class_radius(labels, radius, n, xy.device)[order]
    d2 = (xs[:, None, 0] - xs[None, :, 0]) ** 2 + (xs[:, None, 1] - xs[None, :, 1]) ** 2
    sup = d2 <= (r[:, None] ** 2)
    if labels is not None:
        ls = labels[order]
        sup &= ls[:, None] == ls[None, :]
    return _finish(order, greedy_from_mask(sup), max_out)
