"""Triton NMS (imported lazily): a suppression-mask kernel over (i, j) tiles of score-sorted
boxes, then a single-program greedy pass that keeps the "removed" flags in registers.

The rotated IoU is the reference's algorithm (edge clipping + Green's theorem, see
:mod:`.reference`) in float32, so a pair whose IoU lies within float32 rounding of the threshold
could decide differently from the float64 reference; the tests use inputs away from that edge.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .reference import EDGE_EPS, SNAP, bev_params, class_radius, greedy_from_mask, score_order

_BI = 16
_BJ = 16
_GREEDY_MAX = 16384


@triton.jit
def _plane(f0, den, same, t0, t1, empty, eps, KEEP_SHARED: tl.constexpr):
    par = den == 0.0
    if KEEP_SHARED:
        on_ok = same
    else:
        on_ok = same & False
    on_line = par & (tl.abs(f0) <= eps)
    empty = empty | (par & (f0 > eps)) | (on_line & (on_ok == 0))
    t = -f0 / tl.where(par, 1.0, den)
    t1 = tl.where((~par) & (den > 0.0), tl.minimum(t1, t), t1)
    t0 = tl.where((~par) & (den < 0.0), tl.maximum(t0, t), t0)
    return t0, t1, empty


@triton.jit
def _edge(x0, y0, x1, y1, enx, eny, hb, wb, ox, oy, eps, KEEP_SHARED: tl.constexpr):
    dx = x1 - x0
    dy = y1 - y0
    t0 = tl.zeros_like(x0)
    t1 = tl.zeros_like(x0) + 1.0
    empty = x0 != x0  # all False (x0 is finite)
    t0, t1, empty = _plane(x0 - hb, dx, enx > 0.0, t0, t1, empty, eps, KEEP_SHARED)
    t0, t1, empty = _plane(y0 - wb, dy, eny > 0.0, t0, t1, empty, eps, KEEP_SHARED)
    t0, t1, empty = _plane(-x0 - hb, -dx, enx < 0.0, t0, t1, empty, eps, KEEP_SHARED)
    t0, t1, empty = _plane(-y0 - wb, -dy, eny < 0.0, t0, t1, empty, eps, KEEP_SHARED)
    ok = (~empty) & (t0 < t1)
    px = x0 + t0 * dx - ox
    py = y0 + t0 * dy - oy
    qx = x0 + t1 * dx - ox
    qy = y0 + t1 * dy - oy
    return tl.where(ok, px * qy - py * qx, 0.0)


@triton.jit
def _clip_sum(tx, ty, c, s, ha, wa, hb, wb, ox, oy, eps, KEEP_SHARED: tl.constexpr):
    # Corners (+-ha, +-wa) counter-clockwise: (1,-1), (1,1), (-1,1), (-1,-1); normals +x,+y,-x,-y.
    ax0 = tx + c * ha + s * wa
    ay0 = ty + s * ha - c * wa
    ax1 = tx + c * ha - s * wa
    ay1 = ty + s * ha + c * wa
    ax2 = tx - c * ha - s * wa
    ay2 = ty - s * ha + c * wa
    ax3 = tx - c * ha + s * wa
    ay3 = ty - s * ha - c * wa
    total = _edge(ax0, ay0, ax1, ay1, c, s, hb, wb, ox, oy, eps, KEEP_SHARED)
    total += _edge(ax1, ay1, ax2, ay2, -s, c, hb, wb, ox, oy, eps, KEEP_SHARED)
    total += _edge(ax2, ay2, ax3, ay3, -c, -s, hb, wb, ox, oy, eps, KEEP_SHARED)
    total += _edge(ax3, ay3, ax0, ay0, s, -c, hb, wb, ox, oy, eps, KEEP_SHARED)
    return total


@triton.jit
def _rotated_mask_kernel(p_ptr, lab_ptr, mask_ptr, n, thr, snap, eps, USE_LABELS: tl.constexpr,
                         BI: tl.constexpr, BJ: tl.constexpr):
    pi = tl.program_id(0) * BI + tl.arange(0, BI)
    pj = tl.program_id(1) * BJ + tl.arange(0, BJ)
    mi = pi < n
    mj = pj < n
    xa = tl.load(p_ptr + pi * 5 + 0, mask=mi, other=0.0)[:, None]
    ya = tl.load(p_ptr + pi * 5 + 1, mask=mi, other=0.0)[:, None]
    la = tl.load(p_ptr + pi * 5 + 2, mask=mi, other=1.0)[:, None]
    wa = tl.load(p_ptr + pi * 5 + 3, mask=mi, other=1.0)[:, None]
    ra = tl.load(p_ptr + pi * 5 + 4, mask=mi, other=0.0)[:, None]
    xb = tl.load(p_ptr + pj * 5 + 0, mask=mj, other=0.0)[None, :]
    yb = tl.load(p_ptr + pj * 5 + 1, mask=mj, other=0.0)[None, :]
    lb = tl.load(p_ptr + pj * 5 + 2, mask=mj, other=1.0)[None, :]
    wb = tl.load(p_ptr + pj * 5 + 3, mask=mj, other=1.0)[None, :]
    rb = tl.load(p_ptr + pj * 5 + 4, mask=mj, other=0.0)[None, :]
    rel = ra - rb
    c = tl.cos(rel)
    s = tl.sin(rel)
    # Snap near-axis relative rotations so parallel edges are exactly parallel (see reference).
    near_c = tl.abs(s) < snap
    near_s = tl.abs(c) < snap
    sgn_c = tl.where(c > 0.0, 1.0, tl.where(c < 0.0, -1.0, 0.0))
    sgn_s = tl.where(s > 0.0, 1.0, tl.where(s < 0.0, -1.0, 0.0))
    c2 = tl.where(near_c, sgn_c, tl.where(near_s, 0.0, c))
    s2 = tl.where(near_s, sgn_s, tl.where(near_c, 0.0, s))
    dx = xa - xb
    dy = ya - yb
    cb = tl.cos(rb)
    sb = tl.sin(rb)
    tx = cb * dx + sb * dy
    ty = -sb * dx + cb * dy
    zero = tl.zeros_like(tx)
    sum_a = _clip_sum(tx, ty, c2, s2, la * 0.5, wa * 0.5, lb * 0.5, wb * 0.5, zero, zero, eps, True)
    ca = tl.cos(ra)
    sa = tl.sin(ra)
    ux = -(ca * dx + sa * dy)
    uy = -(-sa * dx + ca * dy)
    sum_b = _clip_sum(ux, uy, c2, -s2, lb * 0.5, wb * 0.5, la * 0.5, wa * 0.5, ux, uy, eps, False)
    inter = tl.maximum(0.5 * (sum_a + sum_b), 0.0)
    union = la * wa + lb * wb - inter
    iou = tl.where(union > 0.0, inter / tl.maximum(union, 1e-12), 0.0)
    sup = (iou > thr) & (pj[None, :] > pi[:, None]) & mi[:, None] & mj[None, :]
    if USE_LABELS:
        li = tl.load(lab_ptr + pi, mask=mi, other=-1)
        lj = tl.load(lab_ptr + pj, mask=mj, other=-2)
        sup = sup & (li[:, None] == lj[None, :])
    tl.store(mask_ptr + pi[:, None] * n + pj[None, :], sup.to(tl.int8),
             mask=mi[:, None] & mj[None, :])


@triton.jit
def _circle_mask_kernel(xy_ptr, r_ptr, lab_ptr, mask_ptr, n, USE_LABELS: tl.constexpr,
                        BI: tl.constexpr, BJ: tl.constexpr):
    # Axis 2: independent sets of n boxes each (their inputs and masks one after the other).
    st = tl.program_id(2).to(tl.int64)
    xy_ptr += st * n * 2
    r_ptr += st * n
    mask_ptr += st * n * n
    pi = tl.program_id(0) * BI + tl.arange(0, BI)
    pj = tl.program_id(1) * BJ + tl.arange(0, BJ)
    mi = pi < n
    mj = pj < n
    xa = tl.load(xy_ptr + pi * 2, mask=mi, other=0.0)
    ya = tl.load(xy_ptr + pi * 2 + 1, mask=mi, other=0.0)
    ri = tl.load(r_ptr + pi, mask=mi, other=0.0)
    xb = tl.load(xy_ptr + pj * 2, mask=mj, other=0.0)
    yb = tl.load(xy_ptr + pj * 2 + 1, mask=mj, other=0.0)
    ddx = xa[:, None] - xb[None, :]
    ddy = ya[:, None] - yb[None, :]
    d2 = ddx * ddx + ddy * ddy
    sup = (d2 <= (ri * ri)[:, None]) & (pj[None, :] > pi[:, None]) & mi[:, None] & mj[None, :]
    if USE_LABELS:
        li = tl.load(lab_ptr + st * n + pi, mask=mi, other=-1)
        lj = tl.load(lab_ptr + st * n + pj, mask=mj, other=-2)
        sup = sup & (li[:, None] == lj[None, :])
    tl.store(mask_ptr + pi[:, None] * n + pj[None, :], sup.to(tl.int8),
             mask=mi[:, None] & mj[None, :])


@triton.jit
def _greedy_kernel(mask_ptr, keep_ptr, valid_ptr, last_ptr, n, NP2: tl.constexpr):
    # One program per set: the removed flags of its boxes stay in registers for the whole
    # sequential pass. Invalid boxes start removed (never kept, never suppress); the pass ends
    # after the last valid one, read from the device (no host wait for the count).
    st = tl.program_id(0).to(tl.int64)
    mask_ptr += st * n * n
    keep_ptr += st * n
    valid_ptr += st * n
    offs = tl.arange(0, NP2)
    inb = offs < n
    removed = (tl.load(valid_ptr + offs, mask=inb, other=0) == 0).to(tl.int32)
    last = tl.load(last_ptr + st)
    for i in range(0, last):
        row = tl.load(mask_ptr + i * n + offs, mask=inb, other=0).to(tl.int32)
        r_i = tl.sum(tl.where(offs == i, removed, 0), axis=0)
        removed = removed | (row * (r_i == 0).to(tl.int32))
    tl.store(keep_ptr + offs, ((removed == 0) & inb).to(tl.int8), mask=inb)


def _greedy_flags(mask: Tensor, valid: Tensor | None = None) -> Tensor:
    """Kept flags of the greedy pass over ``mask`` (S, n, n) (visiting order; S independent
    sets), only ``valid`` (S, n) boxes taking part (all when None): (S, n) bool. Never waits for
    the GPU below ``_GREEDY_MAX`` boxes a set."""
    sets, n = mask.shape[0], mask.shape[-1]
    dev = mask.device
    if n > _GREEDY_MAX:
        # Too many flags for one program's registers: finish on the host (still exact).
        flags = torch.zeros(sets, n, dtype=torch.bool, device=dev)
        for i in range(sets):
            m = mask[i].bool()
            if valid is not None:
                m &= valid[i][:, None]
            flags[i, greedy_from_mask(m)] = True
        return flags if valid is None else flags & valid
    if valid is None:
        v = torch.ones(sets, n, dtype=torch.int8, device=dev)
        last = torch.full((sets,), n, dtype=torch.int32, device=dev)
    else:
        v = valid.to(torch.int8).contiguous()
        last = (v.to(torch.int32) * torch.arange(1, n + 1, dtype=torch.int32, device=dev)) \
            .amax(dim=1).to(torch.int32).contiguous()
    keep = torch.empty(sets, n, dtype=torch.int8, device=dev)
    _greedy_kernel[(sets,)](mask, keep, v, last, n, NP2=max(16, triton.next_power_of_2(n)))
    return keep.bool()


def _greedy(mask: Tensor, n: int) -> Tensor:
    return torch.nonzero(_greedy_flags(mask.view(1, n, n))[0]).squeeze(1)


def nms_bev_triton(boxes, scores: Tensor, labels: Tensor | None, iou_threshold: float,
                   max_out: int | None = None) -> Tensor:
    """Same contract as :func:`.reference.nms_bev_reference` (IoU in float32)."""
    p = bev_params(boxes)
    n = p.shape[0]
    order = score_order(scores)
    if n == 0:
        return order
    ps = p[order].to(torch.float32).contiguous()
    lab = (labels[order].to(torch.int32).contiguous() if labels is not None
           else torch.zeros(1, dtype=torch.int32, device=ps.device))
    mask = torch.empty(n, n, dtype=torch.int8, device=ps.device)
    _rotated_mask_kernel[(triton.cdiv(n, _BI), triton.cdiv(n, _BJ))](
        ps, lab, mask, n, float(iou_threshold), SNAP, EDGE_EPS, USE_LABELS=labels is not None, BI=_BI,
        BJ=_BJ)
    keep = order[_greedy(mask, n)]
    return keep[:max_out] if max_out is not None else keep


def _circle_mask(xy: Tensor, radius: Tensor, labels: Tensor | None) -> Tensor:
    """(S, n, n) int8 suppression mask of S sets of n boxes in visiting order: xy (S, n, 2),
    radius (S, n), labels (S, n) or None."""
    sets, n = xy.shape[:2]
    xs = xy.to(torch.float32).contiguous()
    r = radius.to(torch.float32).contiguous()
    lab = (labels.to(torch.int32).contiguous() if labels is not None
           else torch.zeros(1, dtype=torch.int32, device=xs.device))
    mask = torch.empty(sets, n, n, dtype=torch.int8, device=xs.device)
    _circle_mask_kernel[(triton.cdiv(n, _BI), triton.cdiv(n, _BJ), sets)](
        xs, r, lab, mask, n, USE_LABELS=labels is not None, BI=_BI, BJ=_BJ)
    return mask


def circle_nms_triton(centers, scores: Tensor, labels: Tensor | None, radius,
                      max_out: int | None = None) -> Tensor:
    """Same contract as :func:`.reference.circle_nms_reference` (distances in float32)."""
    xy = (centers.tensor if hasattr(centers, "tensor") else centers)[:, :2]
    n = xy.shape[0]
    order = score_order(scores)
    if n == 0:
        return order
    r = class_radius(labels, radius, n, xy.device)[order]
    mask = _circle_mask(xy[order][None], r[None], None if labels is None else labels[order][None])
    keep = order[_greedy(mask[0], n)]
    return keep[:max_out] if max_out is not None else keep


def circle_nms_keep_triton(centers, scores: Tensor, labels: Tensor | None, radius,
                           valid: Tensor | None = None) -> Tensor:
    """Same contract as :func:`perception.ops.nms.circle_nms_keep`, for one set (N, 2+) or S
    independent sets (S, N, 2+) at once: (N,) or (S, N) bool. Fixed shapes throughout, so on
    CUDA it queues its kernels without waiting for the GPU."""
    t = centers.tensor if hasattr(centers, "tensor") else centers
    single = t.ndim == 2
    xy = (t[None] if single else t)[..., :2]
    scores = scores[None] if single else scores
    labels = labels[None] if single and labels is not None else labels
    valid = valid[None] if single and valid is not None else valid
    sets, n = xy.shape[:2]
    if n == 0 or sets == 0:
        flags = torch.zeros(sets, n, dtype=torch.bool, device=xy.device)
        return flags[0] if single else flags
    # Visiting order per set: descending score, ties by ascending index.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    r = class_radius(None if labels is None else labels.reshape(-1), radius, sets * n,
                     xy.device).reshape(sets, n)
    take = (lambda a: a.gather(1, order))
    mask = _circle_mask(xy.gather(1, order[..., None].expand(sets, n, 2)), take(r),
                        None if labels is None else take(labels))
    kept = _greedy_flags(mask, None if valid is None else take(valid))
    flags = torch.empty(sets, n, dtype=torch.bool, device=xy.device)
    flags.scatter_(1, order, kept)
    return flags[0] if single else flags
