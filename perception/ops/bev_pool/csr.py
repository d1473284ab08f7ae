"""CPU BEV pooling as a sparse x dense product.

Pooling is ``out = S @ feats`` with ``S`` (cells x pixels) holding the depth weights of the points
that join a pixel to a cell: ``S`` has one entry per frustum point (duplicates add), its pattern
is fixed by the geometry, only its values (a gather of ``depth``) change per forward. MKL's CSR
product then never forms the (points x C) outer product LSS builds. Backward: ``grad_feats =
S^T @ grad_out`` (the transposed pattern is also precomputed) and ``grad_depth`` is ``grad_out @
feats^T`` sampled at the pattern (SDDMM).
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .geometry import BEVPoolGeometry


def _csr(crow: Tensor, col: Tensor, val: Tensor, size) -> Tensor:
    with warnings.catch_warnings():
        # "beta" / "invariant checks" warnings: the pattern is built by us and valid by design.
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col, val, size=size, check_invariants=False)


class _BEVPoolCSR(torch.autograd.Function):
    @staticmethod
    def forward(ctx, depth: Tensor, feats: Tensor, geom: BEVPoolGeometry):
        # torch's sparse CSR matmul has no bfloat16 kernel: under CPU autocast the pooling runs
        # in float32 (autograd casts the gradients back to the inputs' dtypes).
        if depth.dtype == torch.bfloat16 or feats.dtype == torch.bfloat16:
            depth, feats = depth.float(), feats.float()
        c = feats.shape[-1]
        fflat = feats.reshape(-1, c).contiguous()
        vals = depth.reshape(-1)[geom.depth_idx].to(fflat.dtype)
        s = _csr(geom.cell_ptr, geom.feat_idx, vals, (geom.num_cells, geom.num_feats))
        with torch.autocast("cpu", enabled=False):
            out = s @ fflat
        ctx.geom = geom
        ctx.depth_shape = depth.shape
        ctx.depth_dtype = depth.dtype
        ctx.save_for_backward(vals, fflat)
        b = geom.frustum_shape[0]
        hb, wb = geom.bev_shape
        return out.view(b, hb, wb, c).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        geom = ctx.geom
        vals, fflat = ctx.saved_tensors
        c = fflat.shape[1]
        g = grad_out.permute(0, 2, 3, 1).reshape(-1, c).contiguous().to(fflat.dtype)
        grad_depth = grad_feats = None
        if ctx.needs_input_grad[0]:
            pattern = _csr(geom.cell_ptr, geom.feat_idx, torch.ones_like(vals),
                           (geom.num_cells, geom.num_feats))
            gv = torch.sparse.sampled_addmm(pattern, g, fflat.t(), beta=0.0).values()
            grad_depth = torch.zeros(ctx.depth_shape, dtype=ctx.depth_dtype, device=g.device)
            grad_depth.view(-1)[geom.depth_idx] = gv.to(ctx.depth_dtype)
        if ctx.needs_input_grad[1]:
            st = _csr(geom.feat_ptr, geom.cell[geom.feat_order], vals[geom.feat_order],
                      (geom.num_feats, geom.num_cells))
            b, n, _, h, w = geom.frustum_shape
            grad_feats = (st @ g).view(b, n, h, w, c)
        return grad_depth, grad_feats, None


def bev_pool_csr(depth: Tensor, feats: Tensor, geom: BEVPoolGeometry) -> Tensor:
    """Same contract as :func:`.reference.bev_pool_reference`; custom backward."""
    return _BEVPoolCSR.apply(depth, feats, geom)
