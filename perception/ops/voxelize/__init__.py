"""Point cloud voxelization: hard (capped, spconv-compatible) and dynamic (scatter mean).

``voxelize`` / ``voxelize_dynamic`` dispatch on the points' device:

- CUDA: the hash-based Triton kernel (:mod:`.triton`);
- CPU: spconv's ``PointToVoxel`` for hard voxelization when spconv imports (it is the fastest CPU
  implementation we have, and the semantics we copy), else the vectorized torch reference.

``backend`` forces one: ``"auto"``, ``"reference"``, ``"triton"`` (under ``TRITON_INTERPRET=1``
this runs the kernel on CPU tensors, which is how the tests check it) or ``"spconv"`` (hard only).

Batches: both functions take one sample; voxelize each sample and prepend a batch column to the
coords (``torch.nn.functional.pad(coords, (1, 0), value=b)``) to build a batched sparse tensor.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .reference import dynamic_voxelize_reference, grid_meta, hard_voxelize_reference

__all__ = ["voxelize", "voxelize_dynamic", "hard_voxelize_reference",
           "dynamic_voxelize_reference"]

_SPCONV_CACHE: dict = {}


def _range_from_grid(grid, voxel_size, point_range):
    if grid is not None:
        # A BEVGrid fixes both the extent and the voxel size unless they are given explicitly.
        if voxel_size is None:
            voxel_size = grid.voxel_size
        if point_range is None:
            point_range = (grid.x_range[0], grid.y_range[0], grid.z_range[0],
                           grid.x_range[1], grid.y_range[1], grid.z_range[1])
    if voxel_size is None or point_range is None:
        raise ValueError("give voxel_size and point_range, or a BEVGrid")
    return tuple(float(v) for v in voxel_size), tuple(float(v) for v in point_range)


def _spconv_hard(points: Tensor, voxel_size, point_range, max_points, max_voxels):
    from spconv.pytorch.utils import PointToVoxel

    c = points.shape[1]
    key = (voxel_size, point_range, c, max_points, max_voxels)
    gen = _SPCONV_CACHE.get(key)
    if gen is None:
        # The CPU generator owns a dense hash of the whole grid (hundreds of MB at 0.075 m):
        # build it once per configuration, never per call. Keep only the latest one.
        _SPCONV_CACHE.clear()
        gen = PointToVoxel(vsize_xyz=list(voxel_size), coors_range_xyz=list(point_range),
                           num_point_features=c, max_num_voxels=max_voxels,
                           max_num_points_per_voxel=max_points)
        _SPCONV_CACHE[key] = gen
    return gen(points.contiguous().to(torch.float32))


def voxelize(points: Tensor, voxel_size: Sequence[float] | None = None,
             point_range: Sequence[float] | None = None, max_points_per_voxel: int = 10,
             max_voxels: int = 160_000, *, grid=None, backend: str = "auto"):
    """Hard voxelization with caps, identical to spconv 2.x ``PointToVoxel``.

    Args:
        points: (N, C) float32, columns x, y, z (metres, ego/LiDAR frame) then features.
        voxel_size: (x, y, z) voxel edge, metres. point_range: (x0, y0, z0, x1, y1, z1) metres,
            min inclusive, max exclusive. Either may come from ``grid`` (a ``BEVGrid``: its
            ``voxel_size`` and x/y/z ranges).
        max_points_per_voxel: P, the first P points (input order) of a voxel are kept.
        max_voxels: at most this many voxels, numbered in first-come order.
        backend: "auto" | "reference" | "triton" | "spconv".
    Returns:
        voxels: (M, P, C) float32, zero-padded past ``num_points``.
        coords: (M, 3) int32 voxel indices ``(z, y, x)``.
        num_points: (M,) int32 in [1, P].
    Points outside the range or with a non-finite coordinate are dropped.
    """
    voxel_size, point_range = _range_from_grid(grid, voxel_size, point_range)
    grid_meta(voxel_size, point_range)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, C>=3), got {tuple(points.shape)}")
    if backend == "auto":
        if points.is_cuda:
            backend = "triton"
        else:
            try:
                import spconv.pytorch.utils  # noqa: F401

                backend = "spconv"
            except Exception:  # spconv missing or unimportable: the reference is exact too
                backend = "reference"
    if backend == "spconv":
        if points.shape[0] == 0:
            # spconv's CPU path handles empty input, but skip the call: nothing to hash.
            return hard_voxelize_reference(points, voxel_size, point_range,
                                           max_points_per_voxel, max_voxels)
        return _spconv_hard(points, voxel_size, point_range, max_points_per_voxel, max_voxels)
    if backend == "reference":
        return hard_voxelize_reference(points, voxel_size, point_range, max_points_per_voxel,
                                       max_voxels)
    if backend == "triton":
        from .triton import hard_voxelize_triton

        return hard_voxelize_triton(points, voxel_size, point_range, max_points_per_voxel,
                                    max_voxels)
    raise ValueError(f"unknown backend {backend!r}")


def voxelize_dynamic(points: Tensor, voxel_size: Sequence[float] | None = None,
                     point_range: Sequence[float] | None = None, *, grid=None,
                     backend: str = "auto"):
    """Dynamic voxelization: no caps, each voxel's feature is the mean of its points.

    Args:
        points: (N, C) float32, x, y, z (metres) then features.
        voxel_size, point_range, grid: as :func:`voxelize`.
        backend: "auto" (triton on CUDA, reference on CPU) | "reference" | "triton".
    Returns:
        features: (M, C) float32 per-voxel mean of all C columns (x, y, z included).
        coords: (M, 3) int32 ``(z, y, x)``, voxels in first-come order.
        point_to_voxel: (N,) int64 row of each point's voxel, -1 for dropped points.
    """
    voxel_size, point_range = _range_from_grid(grid, voxel_size, point_range)
    grid_meta(voxel_size, point_range)
    if backend == "auto":
        backend = "triton" if points.is_cuda else "reference"
    if backend == "reference":
        return dynamic_voxelize_reference(points, voxel_size, point_range)
    if backend == "triton":
        from .triton import dynamic_voxelize_triton

        return dynamic_voxelize_triton(points, voxel_size, point_range)
    raise ValueError(f"unknown backend {backend!r}")
