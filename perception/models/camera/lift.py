"""Lift-splat: per-pixel categorical depth x context features, pooled into the BEV grid.

Frustum geometry, for feature pixel (i, j) of a stride-s map and depth bin centre d:
  augmented pixel centre (u, v) = ((j + 0.5) s, (i + 0.5) s)   (corner-origin pixels, see
  ``camera.transforms``) -> original pixel = img_aug^-1 (u, v, 1) -> camera ray K^-1 (u, v, 1)
  scaled to depth d along the optical axis -> ego = ego_T_camera (p, 1) -> BEV cell.
Missing cameras get NaN points, which every BEV range test rejects, so they contribute nothing
(and their cells are reported invalid rather than zero).
The point -> cell assignment is cached per calibration by ``ops.bev_pool.cached_geometry``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from perception.ops.bev_pool import BEVPoolGeometry, bev_pool, cached_geometry, find_geometry
from perception.structures.grid import BEVGrid


def depth_bin_centers(depth_bins: tuple[float, float, float]) -> Tensor:
    """(D,) float32 metres: centres of the bins ``(min, max, step)``."""
    lo, hi, step = depth_bins
    n = int(round((hi - lo) / step))
    return lo + (torch.arange(n, dtype=torch.float32) + 0.5) * step


def frustum_points(*, intrinsics: Tensor, ego_T_camera: Tensor, img_aug: Tensor,
                   camera_mask: Tensor, feature_shape: tuple[int, int], stride: int,
                   depths: Tensor) -> Tensor:
    """Ego-frame position of every (camera, depth bin, feature pixel) of the frustum.

    Args:
        intrinsics: (B, N, 3, 3) pixels. ego_T_camera: (B, N, 4, 4). img_aug: (B, N, 3, 3).
        camera_mask: (B, N) bool; absent cameras give NaN points.
        feature_shape: (h, w) of the lifted feature map; stride: its stride in input pixels.
        depths: (D,) metres along the optical axis.
    Returns:
        (B, N, D, h, w, 3) float32 metres, ego frame.
    """
    dev = intrinsics.device
    h, w = feature_shape
    # Geometry in float64: a 1e-4 relative error at 50 m is 5 mm, but the inverse of an
    # augmentation with a crop offset of hundreds of pixels loses more than that in float32.
    K = intrinsics.double()
    A = img_aug.double()
    T = ego_T_camera.double()
    v, u = torch.meshgrid((torch.arange(h, dtype=torch.float64, device=dev) + 0.5) * stride,
                          (torch.arange(w, dtype=torch.float64, device=dev) + 0.5) * stride,
                          indexing="ij")
    uv1 = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3)          # (hw, 3)
    # Undo the augmentation (a homography in general; normalise the third coordinate).
    orig = torch.einsum("bnij,pj->bnpi", torch.linalg.inv(A), uv1)                # (B, N, hw, 3)
    orig = orig / orig[..., 2:3]
    rays = torch.einsum("bnij,bnpj->bnpi", torch.linalg.inv(K), orig)             # z = 1 rays
    rays = rays / rays[..., 2:3]
    d = depths.to(dev, torch.float64)
    cam = rays[:, :, None, :, :] * d[None, None, :, None, None]                   # (B,N,D,hw,3)
    ego = torch.einsum("bnij,bndpj->bndpi", T[..., :3, :3], cam) + T[:, :, None, None, :3, 3]
    ego = ego.masked_fill(~camera_mask[:, :, None, None, None], float("nan"))
    b, n = camera_mask.shape
    return ego.reshape(b, n, len(d), h, w, 3).float()


def calibration_key(*tensors: Tensor) -> tuple:
    """Hashable identity of a rig calibration: the dtypes, shapes and values of its (small)
    tensors.

    Costs one device-to-host copy of a few hundred numbers (all tensors in one, in float64,
    which holds float32, integers and bools exactly); a wrong cache hit would silently misplace
    the whole camera BEV, so the key is exact rather than, say, a sample token.
    """
    dev = tensors[0].device
    flat = torch.cat([t.detach().reshape(-1).to(dev, torch.float64) for t in tensors]).cpu()
    return (tuple((str(t.dtype), tuple(t.shape)) for t in tensors), flat.numpy().tobytes())


class DepthLift(nn.Module):
    """Depth distribution x context -> BEV.

    Args:
        in_channels: channels of the image feature map.
        context_channels: C, the lifted feature width.
        depth_bins: (min, max, step) metres.
        stride: stride of the feature map in input pixels.
        grid: the BEV raster.
    Forward shapes: feats (B, N, C_in, h, w) + calibration -> (B, C, H_bev, W_bev), the
    (B, H_bev, W_bev) bool mask of cells that some present camera's frustum reaches, and the
    (B, N, D, h, w) depth logits (for depth supervision, ``camera.depth``).
    """

    def __init__(self, *, in_channels: int, context_channels: int,
                 depth_bins: tuple[float, float, float], stride: int, grid: BEVGrid):
        super().__init__()
        self.register_buffer("depths", depth_bin_centers(depth_bins), persistent=False)
        self.depth_bins = tuple(depth_bins)
        self.num_depth = len(self.depths)
        self.context_channels = context_channels
        self.stride = stride
        self.grid = grid
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, self.num_depth + context_channels, 1),
        )
        self.out_channels = context_channels

    def geometry(self, *, intrinsics: Tensor, ego_T_camera: Tensor, img_aug: Tensor,
                 camera_mask: Tensor, feature_shape: tuple[int, int]) -> BEVPoolGeometry:
        """Which frustum point lands in which BEV cell, for this calibration and a feature map of
        ``feature_shape``: cached per calibration; the points are computed only on a miss."""
        b, n = camera_mask.shape
        h, w = feature_shape
        key = ("lift", self.stride, calibration_key(intrinsics, ego_T_camera, img_aug,
                                                    camera_mask, self.depths))
        shape = (b, n, self.num_depth, h, w, 3)
        geom = find_geometry(key, shape, self.grid, intrinsics.device)
        if geom is None:
            with torch.no_grad():
                pts = frustum_points(intrinsics=intrinsics, ego_T_camera=ego_T_camera,
                                     img_aug=img_aug, camera_mask=camera_mask,
                                     feature_shape=(h, w), stride=self.stride, depths=self.depths)
            geom = cached_geometry(pts, self.grid, key=key)
        return geom

    def forward(self, feats: Tensor, *, intrinsics: Tensor, ego_T_camera: Tensor,
                img_aug: Tensor, camera_mask: Tensor,
                geometry: BEVPoolGeometry | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``geometry``: :meth:`geometry` of the same calibration, when the caller has it."""
        b, n, c, h, w = feats.shape
        if geometry is None:
            geometry = self.geometry(intrinsics=intrinsics, ego_T_camera=ego_T_camera,
                                     img_aug=img_aug, camera_mask=camera_mask,
                                     feature_shape=(h, w))
        y = self.net(feats.reshape(b * n, c, h, w))
        logits = y[:, :self.num_depth].reshape(b, n, self.num_depth, h, w)
        depth = logits.softmax(dim=2)
        context = y[:, self.num_depth:].reshape(b, n, self.context_channels, h, w)
        bev = bev_pool(depth, context.permute(0, 1, 3, 4, 2).contiguous(), geometry)
        counts = geometry.cell_ptr[1:] - geometry.cell_ptr[:-1]
        valid = (counts > 0).reshape(b, *self.grid.shape)
        return bev, valid, logits
