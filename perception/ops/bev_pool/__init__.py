"""Camera BEV pooling (lift-splat): frustum features into the BEV grid.

Usage (once per calibration, then per forward)::

    geom = cached_geometry(frustum_points, grid, key=calib_key)   # (B, N, D, H, W, 3) ego metres
    bev = bev_pool(depth, feats, geom)   # depth (B, N, D, H, W), feats (B, N, H, W, C)
                                         # -> (B, C, grid.height, grid.width)

Backends (``backend=``): "auto" (Triton on CUDA, the CSR sparse product on CPU), "csr",
"triton" (runs on CPU under ``TRITON_INTERPRET=1``), "reference" (chunked gather + index_add,
autograd through plain ops). All differentiate with respect to depth and feats.
"""
from __future__ import annotations

from torch import Tensor

from .csr import bev_pool_csr
from .geometry import BEVPoolGeometry, cached_geometry, find_geometry
from .reference import bev_pool_reference

__all__ = ["bev_pool", "BEVPoolGeometry", "cached_geometry", "find_geometry", "bev_pool_reference"]


def bev_pool(depth: Tensor, feats: Tensor, geometry: BEVPoolGeometry, *,
             backend: str = "auto") -> Tensor:
    """Sum ``depth[p] * feats[pixel(p)]`` over the frustum points p of every BEV cell.

    Args:
        depth: (B, N, D, H, W) per-pixel depth weights (e.g. softmax over D).
        feats: (B, N, H, W, C) image features (channels last).
        geometry: :class:`BEVPoolGeometry` of the frustum (B, N, D, H, W) and BEV grid.
        backend: "auto" | "csr" | "triton" | "reference".
    Returns:
        (B, C, H_bev, W_bev), rows along +y, columns along +x (``BEVGrid`` layout).
    """
    b, n, d, h, w = geometry.frustum_shape
    if tuple(depth.shape) != (b, n, d, h, w) or tuple(feats.shape[:-1]) != (b, n, h, w):
        raise ValueError(f"depth {tuple(depth.shape)} / feats {tuple(feats.shape)} do not match "
                         f"the geometry's frustum {geometry.frustum_shape}")
    if backend == "auto":
        backend = "triton" if feats.is_cuda else "csr"
    if backend == "csr":
        return bev_pool_csr(depth, feats, geometry)
    if backend == "reference":
        return bev_pool_reference(depth, feats, geometry)
    if backend == "triton":
        from .triton import bev_pool_triton

        return bev_pool_triton(depth, feats, geometry)
    raise ValueError(f"unknown backend {backend!r}")
