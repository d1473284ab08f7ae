"""Triton voxelization: open-addressing hash of voxel keys, one lane per point.

One kernel computes each point's voxel key (the reference's float32 arithmetic, IEEE division),
inserts it and counts the voxel's points; the host reads the voxel count once; a second kernel
places the points into the (M, P, C) output. Few launches: at 300k points the GPU work is
~0.4 ms, so every launch and host wait shows in the time.

Only imported from the dispatcher (triton is optional). Output is bit-identical to
:mod:`.reference` for hard voxelization: the hash finds each voxel and, with an atomic min, the
index of its first point, which fixes the first-come voxel numbering independent of thread
scheduling; a stable sort of the per-point voxel ranks then orders points within a voxel.
Dynamic voxelization sums features with float atomics, so means match the reference to rounding.
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

from .reference import grid_meta

# A compiled kernel reads only globals that are tl.constexpr (the interpreter reads any).
_EMPTY_KEY = -1
_EMPTY = tl.constexpr(_EMPTY_KEY)
_BLOCK = 256


@triton.jit
def _hash_insert_kernel(points_ptr, n, C, lo_x, lo_y, lo_z, vs_x, vs_y, vs_z, gx, gy, gz,
                        keys_ptr, coords_ptr, table_keys_ptr, table_first_ptr, table_count_ptr,
                        point_slot_ptr, table_mask, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    in_n = offs < n
    # The voxel key, exactly as reference.point_keys computes it: float32 (p - lo) / size with
    # IEEE division (div_rn; the default division is approximate), floored; NaN and inf fail the
    # range test.
    row = points_ptr + offs.to(tl.int64) * C
    cx = tl.floor(tl.math.div_rn(tl.load(row, mask=in_n, other=-1.0) - lo_x, vs_x))
    cy = tl.floor(tl.math.div_rn(tl.load(row + 1, mask=in_n, other=-1.0) - lo_y, vs_y))
    cz = tl.floor(tl.math.div_rn(tl.load(row + 2, mask=in_n, other=-1.0) - lo_z, vs_z))
    active = in_n & (cx >= 0) & (cx < gx) & (cy >= 0) & (cy < gy) & (cz >= 0) & (cz < gz)
    ix = tl.where(active, cx, 0.0).to(tl.int64)
    iy = tl.where(active, cy, 0.0).to(tl.int64)
    iz = tl.where(active, cz, 0.0).to(tl.int64)
    key = tl.where(active, (iz * gy + iy) * gx + ix, -1)
    tl.store(keys_ptr + offs, key, mask=in_n)
    tl.store(coords_ptr + offs * 3, iz, mask=in_n)
    tl.store(coords_ptr + offs * 3 + 1, iy, mask=in_n)
    tl.store(coords_ptr + offs * 3 + 2, ix, mask=in_n)
    # Multiplicative hash; keys are < 2**31 for any sane grid so the product does not overflow.
    slot = ((key * 2654435761) >> 11) & table_mask
    slot = tl.where(active, slot, 0)
    done = ~active
    found = tl.full([BLOCK], -1, tl.int64)
    remaining = tl.sum((~done).to(tl.int32), axis=0)
    while remaining > 0:
        # atomic_cas has no mask: finished lanes compare against a value never stored (-2) so
        # their CAS is a no-op read.
        cmp = tl.where(done, -2, _EMPTY).to(tl.int64)
        old = tl.atomic_cas(table_keys_ptr + slot, cmp, key)
        ok = (~done) & ((old == _EMPTY) | (old == key))
        found = tl.where(ok, slot, found)
        done = done | ok
        slot = tl.where(done, slot, (slot + 1) & table_mask)
        remaining = tl.sum((~done).to(tl.int32), axis=0)
    tl.atomic_min(table_first_ptr + found, offs.to(tl.int64), mask=active)
    tl.atomic_add(table_count_ptr + found, 1, mask=active)
    tl.store(point_slot_ptr + offs, found, mask=in_n)


@triton.jit
def _scatter_voxels_kernel(points_ptr, perm_ptr, sv_ptr, starts_ptr, out_ptr, n, m, P,
                           C: tl.constexpr, CP: tl.constexpr, BLOCK: tl.constexpr):
    # Lane i takes the i-th point in (voxel, index) order: voxel sv[i], input row perm[i]; its
    # slot in the voxel is its position in the voxel's run. Kept when the voxel is one of the m
    # and the slot is under the cap P.
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m_in = offs < n
    v = tl.load(sv_ptr + offs, mask=m_in, other=0).to(tl.int64)
    keep = m_in & (v < m)
    slot = offs - tl.load(starts_ptr + v, mask=keep, other=0)
    keep = keep & (slot < P)
    src = tl.load(perm_ptr + offs, mask=keep, other=0)
    ch = tl.arange(0, CP)
    mm = keep[:, None] & (ch[None, :] < C)
    vals = tl.load(points_ptr + src[:, None] * C + ch[None, :], mask=mm, other=0.0)
    tl.store(out_ptr + (v * P + slot)[:, None] * C + ch[None, :], vals, mask=mm)


@triton.jit
def _scatter_rows_kernel(points_ptr, src_ptr, dst_ptr, out_ptr, k, C: tl.constexpr,
                         CP: tl.constexpr, BLOCK: tl.constexpr):
    # Adds row src[i] of points into row dst[i] of out, C channels (float atomics); rows with
    # dst[i] < 0 are skipped.
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m = offs < k
    dst = tl.load(dst_ptr + offs, mask=m, other=-1)
    m = m & (dst >= 0)
    src = tl.load(src_ptr + offs, mask=m, other=0)
    ch = tl.arange(0, CP)
    mm = m[:, None] & (ch[None, :] < C)
    vals = tl.load(points_ptr + src[:, None] * C + ch[None, :], mask=mm, other=0.0)
    tl.atomic_add(out_ptr + dst[:, None] * C + ch[None, :], vals, mask=mm)


def _hash_group(points: Tensor, voxel_size, point_range):
    """Run the hash kernel (voxel keys, table, per-voxel counts in one pass). Returns (coords
    (N, 3) int64 (z, y, x), vox (N,) int64 first-come voxel number or -1, first (M,) index of
    each voxel's first point, counts (M,) points per voxel). Reading M is the only host
    synchronisation: no boolean indexing, whose data-dependent size would wait for the GPU."""
    n, c = points.shape
    dev = points.device
    gx, gy, gz = grid_meta(voxel_size, point_range)
    lo = [float(np.float32(v)) for v in point_range[:3]]
    vs = [float(np.float32(v)) for v in voxel_size]
    # Power-of-two table at >= 2x the points keeps linear probe chains short.
    size = 1 << max(4, int(2 * max(n, 1) - 1).bit_length())
    keys = torch.empty(n, dtype=torch.int64, device=dev)
    coords = torch.empty(n, 3, dtype=torch.int64, device=dev)
    table_keys = torch.full((size,), _EMPTY_KEY, dtype=torch.int64, device=dev)
    table_first = torch.full((size,), n, dtype=torch.int64, device=dev)
    table_count = torch.zeros(size, dtype=torch.int64, device=dev)
    point_slot = torch.empty(n, dtype=torch.int64, device=dev)
    if n:
        _hash_insert_kernel[(triton.cdiv(n, _BLOCK),)](
            points, n, c, *lo, *vs, gx, gy, gz, keys, coords, table_keys, table_first,
            table_count, point_slot, size - 1, BLOCK=_BLOCK)
    valid = keys >= 0
    ar = torch.arange(n, device=dev)
    safe_slot = torch.where(valid, point_slot, 0)
    is_first = valid & (table_first[safe_slot] == ar)
    # Heads appear in index order, so a running count of heads is the first-come voxel number.
    rank = torch.cumsum(is_first, 0) - 1
    m = int(rank[-1]) + 1 if n else 0
    # Heads write their number into their slot, and their index into `first`; the other points
    # write into one spare entry at the end (any of them may win there; it is never read).
    rank_of_slot = torch.empty(size + 1, dtype=torch.int64, device=dev)
    rank_of_slot.scatter_(0, torch.where(is_first, point_slot, size), rank)
    vox = torch.where(valid, rank_of_slot[safe_slot], -1)
    first = torch.empty(m + 1, dtype=torch.int64, device=dev)
    first.scatter_(0, torch.where(is_first, rank, m), ar)
    first = first[:m]
    return coords, vox, first, table_count[point_slot[first]]


def hard_voxelize_triton(points: Tensor, voxel_size, point_range, max_points: int,
                         max_voxels: int):
    """Same contract and output as :func:`.reference.hard_voxelize_reference`."""
    points = points.contiguous().to(torch.float32)
    n, c = points.shape
    dev = points.device
    coords, vox, first, counts = _hash_group(points, voxel_size, point_range)
    m = min(first.numel(), max_voxels)
    counts = counts[:m]
    # Points of kept voxels by (voxel, index): a stable sort keeps input order inside a voxel,
    # so position in the run is the point's slot. Dropped points (out of range, past the voxel
    # cap) get key m and sort last. int32 keys: half the radix passes of int64.
    key = torch.where((vox >= 0) & (vox < m), vox, m).to(torch.int32)
    sv, perm = torch.sort(key, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    voxels = torch.zeros(m, max_points, c, dtype=torch.float32, device=dev)
    if n and m:
        _scatter_voxels_kernel[(triton.cdiv(n, _BLOCK),)](
            points, perm, sv, starts, voxels, n, m, max_points, C=c,
            CP=triton.next_power_of_2(c), BLOCK=_BLOCK)
    return voxels, coords[first[:m]].to(torch.int32), counts.clamp(max=max_points).to(torch.int32)


def dynamic_voxelize_triton(points: Tensor, voxel_size, point_range):
    """Same contract as :func:`.reference.dynamic_voxelize_reference` (means up to rounding)."""
    points = points.contiguous().to(torch.float32)
    n, c = points.shape
    dev = points.device
    coords, vox, first, counts = _hash_group(points, voxel_size, point_range)
    m = first.numel()
    sums = torch.zeros(m, c, dtype=torch.float32, device=dev)
    if n and m:
        _scatter_rows_kernel[(triton.cdiv(n, _BLOCK),)](
            points, torch.arange(n, device=dev), vox, sums, n, C=c,
            CP=triton.next_power_of_2(c), BLOCK=_BLOCK)
    return sums / counts.clamp(min=1)[:, None].to(torch.float32), coords[first].to(torch.int32), vox
