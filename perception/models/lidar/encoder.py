"""LidarEncoder: points -> ``ops.voxelize`` -> mean voxel features -> sparse 3D backbone -> BEV."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perception.models.lidar.backbone import HeightCollapse, SparseBackbone3D, spconv_module
from perception.models.outputs import BEVFeatures
from perception.ops.voxelize import voxelize
from perception.structures.batch import host_to_device
from perception.structures.grid import BEVGrid


class LidarEncoder(nn.Module):
    """Per-frame point clouds to one BEV map.

    Args:
        grid: the BEV raster; the voxel grid covers its x/y/z range.
        voxel_size: (x, y, z) metres; x, y must be ``grid.cell_size / backbone.downsample``.
        point_features: leading point columns used (x, y, z, then e.g. intensity, time_lag).
        max_points_per_voxel, max_voxels: hard-voxelization caps, per frame.
        backbone, collapse: built modules.
    Voxel feature (width ``point_features + 3``): the mean of the voxel's points, then the offset
    of the mean xyz from the voxel centre, which is what tells the network where inside the voxel
    the surface is. Every column is brought to order 1 (``feature_scale``): x, y by the grid's
    half-width, z about the middle of the z range, intensity by 255 (nuScenes' range), time lag
    by 0.5 s (ten sweeps), offsets by the voxel size. Raw, the time lag (<= 0.5) sat beside
    coordinates of +-50: its weights had to grow 100x before the sweeps' timing -- the cue for
    velocity -- could count.
    Forward: points (B lists of (N_b, C)) + present (B,) bool -> BEVFeatures (B, C_out, H, W).
    """

    def __init__(self, *, grid: BEVGrid, voxel_size: tuple[float, float, float],
                 point_features: int, max_points_per_voxel: int, max_voxels: int,
                 backbone: SparseBackbone3D, collapse: HeightCollapse):
        super().__init__()
        if abs(voxel_size[0] * backbone.downsample - grid.cell_size) > 1e-6:
            raise ValueError(f"voxel x size {voxel_size[0]} x {backbone.downsample} != BEV cell "
                             f"{grid.cell_size}")
        self.grid = grid
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.point_range = (grid.x_range[0], grid.y_range[0], grid.z_range[0],
                            grid.x_range[1], grid.y_range[1], grid.z_range[1])
        self.spatial_shape = [
            int(round((self.point_range[3 + i] - self.point_range[i]) / self.voxel_size[i]))
            for i in (2, 1, 0)]  # (D, H, W)
        self.point_features = point_features
        self.max_points_per_voxel = max_points_per_voxel
        self.max_voxels = max_voxels
        self.backbone, self.collapse = backbone, collapse
        self.in_channels = point_features + 3
        # Per voxel-feature column: (value - shift) * scale (see the class docstring).
        half = [max(abs(self.point_range[i]), abs(self.point_range[3 + i])) for i in (0, 1)]
        z_mid = 0.5 * (self.point_range[2] + self.point_range[5])
        z_half = 0.5 * (self.point_range[5] - self.point_range[2])
        point_scale = [1 / half[0], 1 / half[1], 1 / z_half, 1 / 255.0, 1 / 0.5]
        scale = (point_scale + [1.0] * point_features)[:point_features]
        scale += [1 / v for v in self.voxel_size]
        shift = [0.0, 0.0, z_mid] + [0.0] * (self.in_channels - 3)
        self.register_buffer("feature_scale", torch.tensor(scale), persistent=False)
        self.register_buffer("feature_shift", torch.tensor(shift), persistent=False)
        # On the model's device, so that placing voxel centres copies nothing from the host.
        self.register_buffer("voxel_size_t", torch.tensor(self.voxel_size), persistent=False)
        self.register_buffer("range_lo", torch.tensor(self.point_range[:3]), persistent=False)
        self.out_channels = collapse.out_channels

    def voxelize(self, points: list[Tensor], present: Tensor) -> tuple[Tensor, Tensor]:
        """Returns voxel features (M, C_in) float32 and coords (M, 4) int32 (b, z, y, x)."""
        feats, coords = [], []
        vs, lo = self.voxel_size_t, self.range_lo
        for b, (p, keep) in enumerate(zip(points, present.tolist())):
            if not keep or len(p) == 0:
                continue
            vox, idx, num = voxelize(p[:, :self.point_features].float().contiguous(),
                                     self.voxel_size, self.point_range,
                                     self.max_points_per_voxel, self.max_voxels)
            mean = vox.sum(1) / num.clamp(min=1).to(vox.dtype)[:, None]
            centre = (idx.flip(1).to(vox.dtype) + 0.5) * vs.to(vox) + lo.to(vox)  # (x, y, z)
            f = torch.cat([mean, mean[:, :3] - centre], dim=1)
            feats.append((f - self.feature_shift.to(f)) * self.feature_scale.to(f))
            coords.append(F.pad(idx.int(), (1, 0), value=b))
        if not feats:
            dev = points[0].device
            return (torch.zeros(0, self.in_channels, device=dev),
                    torch.zeros(0, 4, dtype=torch.int32, device=dev))
        return torch.cat(feats), torch.cat(coords)

    def forward(self, points: list[Tensor], present: Tensor) -> BEVFeatures:
        b = len(points)
        present = present.cpu()      # the host decides which frames to voxelize
        feats, coords = self.voxelize(points, present)
        valid = host_to_device(present, feats.device)[:, None, None].expand(b, *self.grid.shape)
        if len(feats) == 0:
            # No voxel anywhere: nothing for spconv to do. Still run the dense part on zeros so
            # the output has the right shape and stays attached to the parameters.
            dense = feats.new_zeros(b, self.backbone.out_channels * self.collapse.depth,
                                    *self.grid.shape)
            return BEVFeatures(self.collapse.conv(dense), valid)
        spconv = spconv_module(self.backbone.backend)
        # spconv takes float32/float16 only: under CPU bfloat16 autocast the sparse backbone
        # stays in float32 (the dense height collapse after it follows the autocast).
        with torch.autocast("cpu", enabled=False):
            x = spconv.SparseConvTensor(feats.float(), coords, self.spatial_shape, b)
            x = self.backbone(x)
        return BEVFeatures(self.collapse(x), valid)
