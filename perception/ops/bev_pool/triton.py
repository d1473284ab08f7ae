"""Triton BEV pooling (imported lazily by the dispatcher; needs triton).

Forward: one program per non-empty BEV cell (an interval of cell-sorted points) and channel
block, summing ``depth * feats`` over the interval in registers: no atomics, deterministic, and the
(points x C) product never exists in memory. Backward: ``grad_depth`` is one dot product per point
(lanes over points, loop over channels); ``grad_feats`` is one program per image pixel over its
(<= D) points, using the pixel-sorted order from the geometry, so again no atomics.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .geometry import BEVPoolGeometry

_BLOCK_P = 16


def _block_c(c: int) -> int:
    return min(64, triton.next_power_of_2(c))


@triton.jit
def _fwd_kernel(depth_ptr, feats_ptr, depth_idx_ptr, feat_idx_ptr, intervals_ptr, out_ptr,
                C, HW, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    i = tl.program_id(0)
    cb = tl.program_id(1)
    cell = tl.load(intervals_ptr + i * 3)
    start = tl.load(intervals_ptr + i * 3 + 1)
    length = tl.load(intervals_ptr + i * 3 + 2)
    ch = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = ch < C
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for s in range(0, length, BLOCK_P):
        pp = start + s + tl.arange(0, BLOCK_P)
        pm = (s + tl.arange(0, BLOCK_P)) < length
        di = tl.load(depth_idx_ptr + pp, mask=pm, other=0)
        fi = tl.load(feat_idx_ptr + pp, mask=pm, other=0)
        dv = tl.load(depth_ptr + di, mask=pm, other=0.0).to(tl.float32)
        fv = tl.load(feats_ptr + fi[:, None] * C + ch[None, :], mask=pm[:, None] & cm[None, :],
                     other=0.0).to(tl.float32)
        acc += tl.sum(dv[:, None] * fv, axis=0)
    b = cell // HW
    rc = cell % HW
    tl.store(out_ptr + b * C * HW + ch * HW + rc, acc, mask=cm)


@triton.jit
def _grad_depth_kernel(grad_ptr, feats_ptr, depth_idx_ptr, feat_idx_ptr, cell_ptr, gdepth_ptr,
                       K, C, HW, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    pp = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = pp < K
    fi = tl.load(feat_idx_ptr + pp, mask=pm, other=0)
    cell = tl.load(cell_ptr + pp, mask=pm, other=0)
    gbase = (cell // HW) * C * HW + cell % HW
    acc = tl.zeros([BLOCK_P], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        m = pm[:, None] & (ch < C)[None, :]
        g = tl.load(grad_ptr + gbase[:, None] + ch[None, :] * HW, mask=m, other=0.0)
        f = tl.load(feats_ptr + fi[:, None] * C + ch[None, :], mask=m, other=0.0)
        acc += tl.sum(g.to(tl.float32) * f.to(tl.float32), axis=1)
    di = tl.load(depth_idx_ptr + pp, mask=pm, other=0)
    tl.store(gdepth_ptr + di, acc, mask=pm)


@triton.jit
def _grad_feats_kernel(grad_ptr, depth_ptr, depth_idx_ptr, cell_ptr, feat_order_ptr,
                       feat_ptr_ptr, gfeats_ptr, C, HW, BLOCK_P: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    f = tl.program_id(0)
    cb = tl.program_id(1)
    start = tl.load(feat_ptr_ptr + f)
    end = tl.load(feat_ptr_ptr + f + 1)
    ch = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = ch < C
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for s in range(start, end, BLOCK_P):
        qq = s + tl.arange(0, BLOCK_P)
        qm = qq < end
        q = tl.load(feat_order_ptr + qq, mask=qm, other=0)
        di = tl.load(depth_idx_ptr + q, mask=qm, other=0)
        cell = tl.load(cell_ptr + q, mask=qm, other=0)
        dv = tl.load(depth_ptr + di, mask=qm, other=0.0).to(tl.float32)
        gbase = (cell // HW) * C * HW + cell % HW
        g = tl.load(grad_ptr + gbase[:, None] + ch[None, :] * HW, mask=qm[:, None] & cm[None, :],
                    other=0.0).to(tl.float32)
        acc += tl.sum(dv[:, None] * g, axis=0)
    tl.store(gfeats_ptr + f * C + ch, acc, mask=cm)


class _BEVPoolTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, depth: Tensor, feats: Tensor, geom: BEVPoolGeometry):
        b = geom.frustum_shape[0]
        hb, wb = geom.bev_shape
        c = feats.shape[-1]
        depth_c = depth.contiguous()
        feats_c = feats.contiguous()
        out = torch.zeros(b, c, hb, wb, dtype=torch.float32, device=feats.device)
        n_int = geom.intervals.shape[0]
        bc = _block_c(c)
        if n_int:
            _fwd_kernel[(n_int, triton.cdiv(c, bc))](
                depth_c, feats_c, geom.depth_idx, geom.feat_idx, geom.intervals, out, c, hb * wb,
                BLOCK_P=_BLOCK_P, BLOCK_C=bc)
        ctx.geom = geom
        ctx.save_for_backward(depth_c, feats_c)
        return out.to(feats.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        geom = ctx.geom
        depth, feats = ctx.saved_tensors
        g = grad_out.contiguous()
        hb, wb = geom.bev_shape
        c = feats.shape[-1]
        bc = _block_c(c)
        k = geom.num_points
        grad_depth = grad_feats = None
        if ctx.needs_input_grad[0]:
            gd = torch.zeros(depth.shape, dtype=torch.float32, device=depth.device)
            if k:
                _grad_depth_kernel[(triton.cdiv(k, _BLOCK_P),)](
                    g, feats, geom.depth_idx, geom.feat_idx, geom.cell, gd, k, c, hb * wb,
                    BLOCK_P=_BLOCK_P, BLOCK_C=bc)
            grad_depth = gd.to(depth.dtype)
        if ctx.needs_input_grad[1]:
            gf = torch.zeros(feats.shape, dtype=torch.float32, device=feats.device)
            if k:
                _grad_feats_kernel[(geom.num_feats, triton.cdiv(c, bc))](
                    g, depth, geom.depth_idx, geom.cell, geom.feat_order, geom.feat_ptr, gf, c,
                    hb * wb, BLOCK_P=_BLOCK_P, BLOCK_C=bc)
            grad_feats = gf.to(feats.dtype)
        return grad_depth, grad_feats, None


def bev_pool_triton(depth: Tensor, feats: Tensor, geom: BEVPoolGeometry) -> Tensor:
    """Same contract as :func:`.reference.bev_pool_reference`; accumulates in float32."""
    return _BEVPoolTriton.apply(depth, feats, geom)
