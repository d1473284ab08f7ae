"""Pure-torch BEV pooling: the truth for the other paths.

``out[b, :, row, col] = sum over frustum points p in that cell of depth[p] * feats[pixel(p), :]``.
Processed in chunks of points so memory stays bounded (never the full (points x C) product);
autograd differentiates it through plain ops.
"""
from __future__ import annotations

from torch import Tensor

from .geometry import BEVPoolGeometry

_CHUNK = 1 << 16


def bev_pool_reference(depth: Tensor, feats: Tensor, geom: BEVPoolGeometry) -> Tensor:
    """Args:
        depth: (B, N, D, H, W) depth distribution per pixel (any non-negative weights).
        feats: (B, N, H, W, C) image features.
        geom: the layout of this frustum.
    Returns:
        (B, C, H_bev, W_bev) pooled BEV features, dtype of feats.
    """
    b, n, d, h, w = geom.frustum_shape
    c = feats.shape[-1]
    hb, wb = geom.bev_shape
    dflat = depth.reshape(-1)
    fflat = feats.reshape(-1, c)
    out = feats.new_zeros(geom.num_cells, c)
    # At least one (possibly empty) step, so the output stays connected to the inputs' graph.
    for s in range(0, max(geom.num_points, 1), _CHUNK):
        sl = slice(s, s + _CHUNK)
        contrib = dflat[geom.depth_idx[sl]].unsqueeze(1) * fflat[geom.feat_idx[sl]]
        out = out.index_add(0, geom.cell[sl], contrib)
    return out.view(b, hb, wb, c).permute(0, 3, 1, 2).contiguous()
