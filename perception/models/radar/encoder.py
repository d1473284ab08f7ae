"""RadarEncoder: per-point MLP (PointNet) over position, RCS, compensated velocity and time lag,
max-pooled per BEV cell, then a BEV conv.

Radar returns are few (hundreds per frame) and carry what no other sensor has: Doppler velocity.
So besides the learned features, three raw channels go straight into the output map: the mean
compensated velocity (vx, vy, scaled) of the cell's returns and log(1 + count). The head can thus
read radar velocity through the fuser without the encoder having to learn to preserve it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from perception.models.layers import ConvBNReLU
from perception.models.outputs import BEVFeatures
from perception.structures.batch import host_to_device
from perception.structures.grid import BEVGrid

_VELOCITY_FIELDS = ("vx_comp", "vy_comp", "vx", "vy")
RAW_CHANNELS = 3  # mean vx_comp, mean vy_comp, log(1 + count)


class RadarEncoder(nn.Module):
    """Per-frame radar points to one BEV map.

    Args:
        grid: the BEV raster.
        point_fields: radar columns used (names in ``Batch.radar_fields``); the in-cell x, y
            offset (in cells, [-0.5, 0.5)) is always prepended.
        hidden_channels: per-point MLP widths.
        out_channels: output channels, the last ``RAW_CHANNELS`` of which are the raw
            velocity/count channels.
        max_abs_velocity: m/s scale for velocity columns (they are divided by it).
        rcs_scale, time_lag_scale: factors on the ``rcs`` and ``time_lag`` columns.
    Forward: points (B lists of (R_b, C_radar)), fields (column names), present (B,) bool ->
    BEVFeatures (B, out_channels, H, W).
    """

    def __init__(self, *, grid: BEVGrid, point_fields: tuple[str, ...],
                 hidden_channels: tuple[int, ...], out_channels: int, max_abs_velocity: float,
                 rcs_scale: float = 1.0, time_lag_scale: float = 1.0):
        super().__init__()
        if out_channels <= RAW_CHANNELS:
            raise ValueError(f"radar out_channels must exceed {RAW_CHANNELS}")
        if "vx_comp" not in point_fields or "vy_comp" not in point_fields:
            raise ValueError("radar point_fields must include vx_comp and vy_comp (the Doppler "
                             "velocity is why radar is here)")
        self.grid = grid
        self.point_fields = tuple(point_fields)
        self.max_abs_velocity = max_abs_velocity
        self.field_scale = {"rcs": rcs_scale, "time_lag": time_lag_scale}
        layers, c_in = [], 2 + len(point_fields)
        for c in hidden_channels:
            # LayerNorm, not BatchNorm: a frame may have a handful of returns, too few for
            # batch statistics.
            layers += [nn.Linear(c_in, c), nn.LayerNorm(c), nn.ReLU(inplace=True)]
            c_in = c
        self.mlp = nn.Sequential(*layers)
        self.pooled_channels = c_in
        self.bev_conv = nn.Sequential(
            ConvBNReLU(c_in + RAW_CHANNELS, out_channels - RAW_CHANNELS),
            ConvBNReLU(out_channels - RAW_CHANNELS, out_channels - RAW_CHANNELS),
        )
        self.out_channels = out_channels

    def point_features(self, points: Tensor, fields: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        """(R, C_radar) -> per-point input (R, 2 + F) and flat cell index (R,), -1 for points
        outside the grid (their input zeroed). Every point is kept, so no shape here depends on
        the data (on CUDA nothing waits for the GPU)."""
        xy = points[:, :2]
        inside = self.grid.in_range(xy)
        rc = self.grid.xy_to_cell(xy)
        centre = self.grid.cell_to_xy(rc)
        offset = (xy - centre) / self.grid.cell_size
        cols = []
        for name in self.point_fields:
            v = points[:, fields.index(name)]
            if name in _VELOCITY_FIELDS:
                v = v / self.max_abs_velocity
            else:
                v = v * self.field_scale.get(name, 1.0)
            cols.append(v)
        cols = torch.stack(cols, dim=1) if cols else offset.new_zeros(len(offset), 0)
        x = torch.cat([offset, torch.nan_to_num(cols)], dim=1)
        # Zero, not just unused: a NaN input would reach the MLP's weight gradients.
        x = torch.where(inside[:, None], x, torch.zeros_like(x))
        cell = torch.where(inside, rc[:, 0] * self.grid.width + rc[:, 1], -1)
        return x, cell

    def forward(self, points: list[Tensor], fields: tuple[str, ...], present: Tensor) -> BEVFeatures:
        missing = [f for f in self.point_fields if f not in fields]
        if missing:
            raise ValueError(f"radar points lack fields {missing} (have {fields})")
        b = len(points)
        h, w = self.grid.shape
        present = present.cpu()      # the host decides which frames to encode
        n_cells = b * h * w          # one more row collects the points outside the grid
        feats, cells = [], []
        for i, (p, keep) in enumerate(zip(points, present.tolist())):
            if not keep:
                continue
            f, c = self.point_features(p.float(), fields)
            feats.append(f)
            cells.append(torch.where(c >= 0, c + i * h * w, n_cells))
        dev = self.bev_conv[0][0].weight.device
        pooled = torch.zeros(n_cells + 1, self.pooled_channels, device=dev)
        raw = torch.zeros(n_cells + 1, RAW_CHANNELS, device=dev)
        if feats:
            f, cell = torch.cat(feats), torch.cat(cells)
            if len(f):
                y = self.mlp(f).float()   # bfloat16 under CPU autocast; pooled is float32
                # Max over the cell's returns (ReLU outputs >= 0, so the zero start is neutral).
                pooled = pooled.scatter_reduce(0, cell[:, None].expand_as(y), y, "amax",
                                               include_self=True)
                ones = torch.ones_like(cell, dtype=f.dtype)
                count = torch.zeros(n_cells + 1, device=dev).index_add(0, cell, ones)
                vel = torch.stack([f[:, 2 + self.point_fields.index(n)]
                                   for n in ("vx_comp", "vy_comp")], dim=1)
                vsum = torch.zeros(n_cells + 1, 2, device=dev).index_add(0, cell, vel)
                raw = torch.cat([vsum / count.clamp(min=1)[:, None], torch.log1p(count)[:, None]], 1)
        pooled = pooled[:n_cells].view(b, h, w, -1).permute(0, 3, 1, 2)
        raw = raw[:n_cells].view(b, h, w, RAW_CHANNELS).permute(0, 3, 1, 2)
        out = torch.cat([self.bev_conv(torch.cat([pooled, raw], 1)), raw], dim=1)
        valid = host_to_device(present, dev)[:, None, None].expand(b, h, w)
        return BEVFeatures(out, valid)
