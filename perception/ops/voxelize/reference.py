"""Pure-torch voxelization: the truth for the kernels and a CPU path.

Semantics follow spconv 2.x ``PointToVoxel`` exactly (checked in tests/ops/test_voxelize.py):

- voxel coordinate along each axis: ``floor((p - range_min) / voxel_size)`` in float32, kept when
  ``0 <= c < grid`` with ``grid = round((range_max - range_min) / voxel_size)``; points with a
  non-finite coordinate are dropped;
- voxels are numbered in first-come order (by the index of their first point);
- inside a voxel, points keep their input order; the first ``max_points`` are stored;
- once ``max_voxels`` voxels exist, points of new voxels are dropped (points of existing voxels
  still fill them).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor


def grid_meta(voxel_size: Sequence[float], point_range: Sequence[float]):
    """(voxel_size (3,) float32, range_min (3,) float32, grid (x, y, z) ints) from metres."""
    if len(voxel_size) != 3 or len(point_range) != 6:
        raise ValueError("voxel_size is (x, y, z), point_range is (x0, y0, z0, x1, y1, z1)")
    grid = tuple(int(round((point_range[i + 3] - point_range[i]) / voxel_size[i])) for i in range(3))
    if min(grid) <= 0:
        raise ValueError(f"empty voxel grid {grid} from range {point_range} / {voxel_size}")
    return grid


def point_keys(points: Tensor, voxel_size, point_range) -> tuple[Tensor, Tensor]:
    """Linear voxel key of every point.

    Args:
        points: (N, C>=3) float, metres; columns 0..2 are x, y, z.
    Returns:
        keys: (N,) int64 ``(z * Gy + y) * Gx + x``, -1 for points outside the range or non-finite.
        coords: (N, 3) int64 ``(z, y, x)`` voxel indices (garbage where keys is -1).
    """
    gx, gy, gz = grid_meta(voxel_size, point_range)
    xyz = points[:, :3].to(torch.float32)
    # Per axis with Python numbers (float32 arithmetic all the same): a small tensor built on
    # the host and copied to a GPU would make the host wait for the GPU's queue.
    c = torch.stack([torch.floor((xyz[:, i] - float(np.float32(point_range[i])))
                                 / float(np.float32(voxel_size[i]))) for i in range(3)], dim=1)
    # NaN compares false everywhere, so NaN/inf points fall out of this mask without a separate test.
    valid = (c[:, 0] >= 0) & (c[:, 0] < gx) & (c[:, 1] >= 0) & (c[:, 1] < gy) \
        & (c[:, 2] >= 0) & (c[:, 2] < gz)
    c = torch.where(valid[:, None], c, torch.zeros_like(c)).to(torch.int64)
    keys = (c[:, 2] * gy + c[:, 1]) * gx + c[:, 0]
    keys = torch.where(valid, keys, torch.full_like(keys, -1))
    return keys, c.flip(1)


def _group(keys: Tensor):
    """Group valid points by key in first-come order.

    Returns (idx, vox, first, M): idx (K,) indices of valid points sorted by (voxel rank, index);
    vox (K,) their voxel rank; first (M,) index of each voxel's first point, ascending; M voxels.
    """
    idx = torch.nonzero(keys >= 0).squeeze(1)
    k = keys[idx]
    # One stable sort: equal keys stay in index order, so a run's head is its first-come point
    # and position-in-run is the point's slot inside the voxel.
    sk, perm = torch.sort(k, stable=True)
    sidx = idx[perm]
    head = torch.ones_like(sk, dtype=torch.bool)
    head[1:] = sk[1:] != sk[:-1]
    run = torch.cumsum(head, 0) - 1
    first_of_run = sidx[head]
    # Voxel rank = order of runs by their first point (first-come numbering, as spconv).
    order = torch.argsort(first_of_run)
    rank_of_run = torch.empty_like(order)
    rank_of_run[order] = torch.arange(order.numel(), device=keys.device)
    return sidx, rank_of_run[run], first_of_run[order], run, head


def hard_voxelize_reference(points: Tensor, voxel_size, point_range, max_points: int,
                            max_voxels: int):
    """Hard voxelization, vectorized (see module docstring for the exact semantics).

    Args:
        points: (N, C) float32, x, y, z (metres) then any features.
        voxel_size: (x, y, z) metres. point_range: (x0, y0, z0, x1, y1, z1) metres.
    Returns:
        voxels (M, max_points, C) float32 zero-padded, coords (M, 3) int32 (z, y, x),
        num_points (M,) int32.
    """
    n, c = points.shape
    dev = points.device
    keys, coords = point_keys(points, voxel_size, point_range)
    sidx, vox, first, run, head = _group(keys)
    m = min(first.numel(), max_voxels)
    # Slot inside the voxel: position within the run of equal keys.
    pos = torch.arange(sidx.numel(), device=dev)
    run_start = pos[head]
    slot = pos - run_start[run]
    take = (vox < m) & (slot < max_points)
    voxels = torch.zeros(m, max_points, c, dtype=points.dtype, device=dev)
    voxels[vox[take], slot[take]] = points[sidx[take]]
    counts = torch.bincount(vox[vox < m], minlength=m)[:m]
    num = counts.clamp(max=max_points).to(torch.int32)
    return voxels, coords[first[:m]].to(torch.int32), num


def dynamic_voxelize_reference(points: Tensor, voxel_size, point_range):
    """Dynamic voxelization: every in-range point kept, features averaged per voxel.

    Args:
        points: (N, C) float, x, y, z (metres) then features.
    Returns:
        features (M, C) float32 mean of the voxel's points, coords (M, 3) int32 (z, y, x) in
        first-come order, point_to_voxel (N,) int64 voxel row of each point (-1 if dropped).
    """
    n, c = points.shape
    dev = points.device
    keys, coords = point_keys(points, voxel_size, point_range)
    sidx, vox, first, _, _ = _group(keys)
    m = first.numel()
    sums = torch.zeros(m, c, dtype=torch.float32, device=dev)
    sums.index_add_(0, vox, points[sidx].to(torch.float32))
    counts = torch.bincount(vox, minlength=m).clamp(min=1)
    p2v = torch.full((n,), -1, dtype=torch.int64, device=dev)
    p2v[sidx] = vox
    return sums / counts[:, None].to(torch.float32), coords[first].to(torch.int32), p2v
