"""Depth supervision of the camera lift from LiDAR (BEVDepth's recipe).

Without it the depth distribution is learnt only through the detection loss, which on a small
budget teaches it nothing (docs/results.md: the camera-only model's heatmap loss stays flat).
Here every feature pixel that some LiDAR point projects into gets a target: the depth bin of the
*nearest* such point (the surface the camera sees first), and the lift's depth logits are trained
with cross-entropy on those pixels.

Which points: the keyframe sweep only (older sweeps put moving objects where they no longer are)
and only measured ones: GT copy-paste appends points that the cameras do not see
(``Batch.lidar_num_pasted``), which would teach depth at pixels that show something else.
Geometry: ``ego_T_camera`` may carry the global BEV augmentation (``aug_T_ego @ ego_T_camera``);
the LiDAR points carry it too, so ``inv(ego_T_camera) @ p`` is the camera-frame point either way.
Pixels follow ``Calibration.project`` (intrinsics, then ``img_aug``) and the lift's convention:
feature pixel (i, j) of stride s covers input pixels [j s, (j + 1) s) x [i s, (i + 1) s).
``visible_points`` does that projection and the nearest-point test for the depth targets and for
the painting (``camera.paint``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -1


def visible_points(points: Tensor, num_pasted: int, time_lag_col: int | None, T: Tensor,
                   K: Tensor, A: Tensor, *, h: int, w: int, stride: int, min_depth: float,
                   depth_tolerance: float = 0.0, nearest_only: bool = False):
    """One frame's keyframe, measured points as its cameras see them (the module docstring's
    points and geometry).

    Args:
        points: (P, C) ego frame, x, y, z first. num_pasted: trailing rows inserted by GT
            copy-paste (skipped). time_lag_col: column of the time lag; only lag-0 rows are kept
            (None: every row).
        T: (n, 4, 4) sensor_T_ego of the n cameras used; K: (n, 3, 3) intrinsics; A: (n, 3, 3)
            img_aug. h, w: the feature map's size; stride: input pixels per feature pixel.
        min_depth: points nearer the camera (metres) are not seen.
        depth_tolerance: a point counts as seen at its feature pixel when within this many
            metres behind the nearest point there; ``nearest_only``: only the nearest itself.
    Returns:
        None when no pair is seen, else ``(p, k, j, pixel, depth)``: the points kept (P', C)
        and per seen (camera, point) pair the camera ``k`` (among the n), the point ``j`` (a
        row of ``p``), the pixel ``(k * h + row) * w + col`` and the depth (metres, float64).
    """
    p = points[:len(points) - num_pasted]
    if time_lag_col is not None:
        p = p[p[:, time_lag_col] == 0]
    if len(p) == 0:
        return None
    xyz = p[:, :3].double()
    cam = torch.einsum("nij,pj->npi", T[:, :3, :3].double(), xyz) + T[:, None, :3, 3].double()
    depth = cam[..., 2]                                                      # (n, P)
    pix = torch.einsum("nij,npj->npi", K.double(), cam)
    uv1 = pix / pix[..., 2:3]
    uv = torch.einsum("nij,npj->npi", A.double(), uv1)
    u, v = uv[..., 0] / uv[..., 2], uv[..., 1] / uv[..., 2]
    col = torch.floor(u / stride)
    row = torch.floor(v / stride)
    ok = ((depth >= min_depth) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
          & torch.isfinite(u) & torch.isfinite(v))
    if not bool(ok.any()):
        return None
    k, j = torch.nonzero(ok, as_tuple=True)                                  # camera k, point j
    pixel = (k * h + row[k, j].long()) * w + col[k, j].long()
    d = depth[k, j]
    nearest = torch.full((len(T) * h * w,), float("inf"), dtype=d.dtype, device=d.device)
    nearest.scatter_reduce_(0, pixel, d, reduce="amin")
    seen = d <= (nearest[pixel] if nearest_only else nearest[pixel] + depth_tolerance)
    return p, k[seen], j[seen], pixel[seen], d[seen]


def visible_in_batch(points: Sequence[Tensor], num_pasted: Tensor, *, time_lag_col: int | None,
                     intrinsics: Tensor, ego_T_camera: Tensor, img_aug: Tensor,
                     camera_mask: Tensor, h: int, w: int, stride: int, min_depth: float,
                     depth_tolerance: float = 0.0, nearest_only: bool = False):
    """:func:`visible_points` for every frame of a batch through its cameras of ``camera_mask``
    ((B, N) bool; ``intrinsics``, ``img_aug`` (B, N, 3, 3), ``ego_T_camera`` (B, N, 4, 4)).
    Yields ``(b, cams, (p, k, j, pixel, depth))`` for each frame where some point is seen,
    ``cams`` the indices of its cameras used (``k`` indexes them)."""
    sensor_T_ego = torch.linalg.inv(ego_T_camera.double())
    for b in range(camera_mask.shape[0]):
        cams = torch.nonzero(camera_mask[b]).squeeze(1)
        if len(cams) == 0:
            continue
        seen = visible_points(points[b], int(num_pasted[b]), time_lag_col,
                              sensor_T_ego[b, cams], intrinsics[b, cams], img_aug[b, cams],
                              h=h, w=w, stride=stride, min_depth=min_depth,
                              depth_tolerance=depth_tolerance, nearest_only=nearest_only)
        if seen is not None:
            yield b, cams, seen


def lidar_depth_targets(points: Sequence[Tensor], num_pasted: Tensor, *, time_lag_col: int | None,
                        intrinsics: Tensor, ego_T_camera: Tensor, img_aug: Tensor,
                        camera_mask: Tensor, feature_shape: tuple[int, int], stride: int,
                        depth_bins: tuple[float, float, float]) -> Tensor:
    """Per feature pixel, the depth bin of the nearest LiDAR point projecting into it.

    Args:
        points: B tensors (N_b, C), ego frame, columns x, y, z first.
        num_pasted: (B,) int, trailing rows of each cloud inserted by GT copy-paste (skipped).
        time_lag_col: column of the time lag (s); only rows with lag 0 (the keyframe sweep) are
            used. None: every row is keyframe.
        intrinsics: (B, N, 3, 3). ego_T_camera: (B, N, 4, 4). img_aug: (B, N, 3, 3).
        camera_mask: (B, N) bool, cameras to supervise (present and used).
        feature_shape: (h, w) of the lifted map; stride: its stride in input pixels.
        depth_bins: (min, max, step) metres, as the lift's.
    Returns:
        (B, N, h, w) int64 bin index, ``IGNORE`` (-1) where no point projects or its depth is
        outside [min, max).
    """
    B, N = camera_mask.shape
    h, w = feature_shape
    lo, hi, step = depth_bins
    n_bins = int(round((hi - lo) / step))
    flat = torch.full((B * N * h * w,), IGNORE, dtype=torch.int64, device=intrinsics.device)
    for b, cams, (_, k, _, pixel, depth) in visible_in_batch(
            points, num_pasted, time_lag_col=time_lag_col, intrinsics=intrinsics,
            ego_T_camera=ego_T_camera, img_aug=img_aug, camera_mask=camera_mask, h=h, w=w,
            stride=stride, min_depth=lo, nearest_only=True):
        # The nearest point of a pixel beyond the last bin leaves it without a target: any other
        # point there lies further still.
        keep = depth < hi
        bins = torch.floor((depth[keep] - lo) / step).long().clamp_(0, n_bins - 1)
        flat[(b * N + cams[k[keep]]) * h * w + pixel[keep] % (h * w)] = bins
    return flat.reshape(B, N, h, w)


def depth_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over the pixels with a target; 0 (with a graph) when there are none.

    Args:
        logits: (B, N, D, h, w) depth logits of the lift.
        targets: (B, N, h, w) from :func:`lidar_depth_targets`.
    """
    B, N, D, h, w = logits.shape
    if not (targets != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(B * N, D, h, w).float(),
                           targets.reshape(B * N, h, w), ignore_index=IGNORE)
