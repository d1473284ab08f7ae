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
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -1


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
    dev = intrinsics.device
    # Start above every bin index so that scatter-amin keeps the nearest; mapped to IGNORE below.
    n_bins = int(round((hi - lo) / step))
    flat = torch.full((B * N * h * w,), n_bins, dtype=torch.int64, device=dev)
    sensor_T_ego = torch.linalg.inv(ego_T_camera.double())
    for b in range(B):
        cams = torch.nonzero(camera_mask[b]).squeeze(1)
        p = points[b]
        keep = len(p) - int(num_pasted[b])
        p = p[:keep]
        if time_lag_col is not None:
            p = p[p[:, time_lag_col] == 0]
        if len(cams) == 0 or len(p) == 0:
            continue
        xyz = p[:, :3].double()
        T = sensor_T_ego[b, cams]                                            # (n, 4, 4)
        cam = torch.einsum("nij,pj->npi", T[:, :3, :3], xyz) + T[:, None, :3, 3]
        depth = cam[..., 2]                                                  # (n, P)
        pix = torch.einsum("nij,npj->npi", intrinsics[b, cams].double(), cam)
        uv1 = pix / pix[..., 2:3]
        uv = torch.einsum("nij,npj->npi", img_aug[b, cams].double(), uv1)
        u, v = uv[..., 0] / uv[..., 2], uv[..., 1] / uv[..., 2]
        col = torch.floor(u / stride)
        row = torch.floor(v / stride)
        ok = ((depth >= lo) & (depth < hi) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
              & torch.isfinite(u) & torch.isfinite(v))
        bins = torch.floor((depth - lo) / step).long().clamp_(0, n_bins - 1)
        base = ((b * N + cams) * h * w)[:, None]
        cell = base + row.long().clamp_(0, h - 1) * w + col.long().clamp_(0, w - 1)
        flat.scatter_reduce_(0, cell[ok], bins[ok], reduce="amin")
    flat[flat == n_bins] = IGNORE
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
