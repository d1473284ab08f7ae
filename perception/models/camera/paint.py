"""Camera features painted onto the LiDAR points (PointPainting's idea, in BEV).

The depth lift spreads each camera feature pixel along its ray; with a small budget the depth
distribution stays vague, so what a camera sees (a car's red rear lights, its white headlights,
the colour of a bus or a trailer) lands metres from where the object is. A LiDAR point has no
such doubt: projected into a camera it names the feature pixel that shows it. The painter
takes, for every keyframe LiDAR point a present camera sees, that camera's FPN feature at the
point's pixel, averages them per BEV cell and adds a learned map of them to the LiDAR BEV map
(``FusionDetector.encode``), so the LiDAR token of the fuser carries appearance exactly where
the surface is.

Which points: the keyframe sweep only (the older sweeps put moving objects where the images no
longer show them) and only measured ones (GT copy-paste appends points the cameras never saw:
``Batch.lidar_num_pasted``). A point is painted by a camera only where it is the surface the
camera sees: within ``depth_tolerance`` of the nearest point projecting into its feature pixel
(a point behind a parked car would otherwise take the car's colour).
Geometry as ``camera.depth.lidar_depth_targets``: ``ego_T_camera`` carries the global BEV
augmentation as the points do, pixels follow ``Calibration.project`` (intrinsics, then
``img_aug``), and feature pixel (i, j) of stride s covers input pixels [j s, (j + 1) s) x
[i s, (i + 1) s).

Where no camera painted a cell's neighbourhood the painter adds exactly zero (its convolutions
have no bias), and its last convolution starts at zero: a fusion model initialised from a LiDAR
model (``train.init_partial``) starts as that model, and a frame without cameras is encoded as
a LiDAR model would encode it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from perception.structures.grid import BEVGrid


def paint_points(feats: Tensor, points: Sequence[Tensor], num_pasted: Tensor, *,
                 time_lag_col: int | None, intrinsics: Tensor, ego_T_camera: Tensor,
                 img_aug: Tensor, camera_mask: Tensor, stride: int, grid: BEVGrid,
                 depth_tolerance: float = 1.0, min_depth: float = 0.5) -> Tensor:
    """Per BEV cell, the mean camera feature of the LiDAR points in it, plus a coverage channel.

    Args:
        feats: (B, N, C, h, w) camera feature maps (rows of absent cameras unused).
        points: B tensors (N_b, C_p), ego frame (augmented like ``ego_T_camera``), x, y, z first.
        num_pasted: (B,) int, trailing rows of each cloud inserted by GT copy-paste (skipped).
        time_lag_col: column of the time lag (s); only rows with lag 0 are painted. None: every
            row is keyframe.
        intrinsics: (B, N, 3, 3). ego_T_camera: (B, N, 4, 4). img_aug: (B, N, 3, 3).
        camera_mask: (B, N) bool, the cameras that paint (present and used).
        stride: input pixels per feature pixel. grid: the BEV raster.
        depth_tolerance: metres behind the nearest point of its feature pixel a point may lie
            and still be painted by that camera.
        min_depth: points nearer the camera than this (metres) are not painted.
    Returns:
        (B, C + 1, H, W) float32: the mean feature over the (point, camera) pairs of each cell,
        and 1 where a cell has any (0 elsewhere, with zero features).
    """
    b_, n_, c, h, w = feats.shape
    H, W = grid.shape
    dev = feats.device
    sums = feats.new_zeros((b_, c, H * W), dtype=torch.float32)
    counts = feats.new_zeros((b_, H * W), dtype=torch.float32)
    sensor_T_ego = torch.linalg.inv(ego_T_camera.double())
    for b in range(b_):
        cams = torch.nonzero(camera_mask[b]).squeeze(1)
        p = points[b][:len(points[b]) - int(num_pasted[b])]
        if time_lag_col is not None:
            p = p[p[:, time_lag_col] == 0]
        if len(cams) == 0 or len(p) == 0:
            continue
        inside = grid.in_range(p)
        p = p[inside]
        if len(p) == 0:
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
        ok = ((depth >= min_depth) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
              & torch.isfinite(u) & torch.isfinite(v))
        if not bool(ok.any()):
            continue
        k, j = torch.nonzero(ok, as_tuple=True)                              # camera k, point j
        pixel = (k * h + row[k, j].long()) * w + col[k, j].long()            # within this frame
        d = depth[k, j]
        nearest = torch.full((len(cams) * h * w,), float("inf"), dtype=d.dtype, device=dev)
        nearest.scatter_reduce_(0, pixel, d, reduce="amin")
        seen = d <= nearest[pixel] + depth_tolerance
        k, j, pixel = k[seen], j[seen], pixel[seen]
        sampled = feats[b, cams].permute(0, 2, 3, 1).reshape(-1, c)[pixel].float()   # (K, C)
        rc = grid.xy_to_cell(p[j, :2])
        cell = rc[:, 0] * W + rc[:, 1]
        sums[b].index_add_(1, cell, sampled.t())
        counts[b].index_add_(0, cell, torch.ones_like(cell, dtype=torch.float32))
    covered = (counts > 0).to(torch.float32)
    mean = sums / counts.clamp(min=1)[:, None]
    return torch.cat([mean, covered[:, None]], dim=1).reshape(b_, c + 1, H, W)


class PointPainter(nn.Module):
    """Camera features at the LiDAR points -> a map to add to the LiDAR BEV map.

    Args:
        grid: the BEV raster. in_channels: C of the camera feature maps (the FPN's).
        hidden_channels: width of the painter's convolutions.
        out_channels: the LiDAR BEV map's channels.
        stride: input pixels per camera feature pixel.
        depth_tolerance: see :func:`paint_points`.
    Forward: the arguments of :func:`paint_points` without ``stride``/``grid`` -> (B,
    out_channels, H, W), exactly zero at cells with no painted cell among their 3 x 3
    neighbours, and everywhere at initialisation.
    """

    def __init__(self, *, grid: BEVGrid, in_channels: int, hidden_channels: int,
                 out_channels: int, stride: int, depth_tolerance: float = 1.0):
        super().__init__()
        self.grid, self.stride, self.depth_tolerance = grid, stride, depth_tolerance
        # No biases and no normalisation: zero in, zero out (see the module docstring).
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + 1, hidden_channels, 1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1, bias=False),
            nn.ReLU(inplace=True))
        self.out = nn.Conv2d(hidden_channels, out_channels, 1, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, feats: Tensor, points: Sequence[Tensor], num_pasted: Tensor, *,
                time_lag_col: int | None, intrinsics: Tensor, ego_T_camera: Tensor,
                img_aug: Tensor, camera_mask: Tensor) -> Tensor:
        painted = paint_points(feats, points, num_pasted, time_lag_col=time_lag_col,
                               intrinsics=intrinsics, ego_T_camera=ego_T_camera,
                               img_aug=img_aug, camera_mask=camera_mask, stride=self.stride,
                               grid=self.grid, depth_tolerance=self.depth_tolerance)
        x = painted.to(self.out.weight.dtype)
        return self.out(self.net(x))
