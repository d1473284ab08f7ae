"""BEVGrid: the one definition of the bird's-eye-view raster, read by every stage.

Layout: a BEV tensor is (C, H, W) with rows along +y and columns along +x of the ego frame:
cell ``(row, col)`` covers ``x in [x_min + col * cell, x_min + (col + 1) * cell)`` and
``y in [y_min + row * cell, y_min + (row + 1) * cell)``. Voxels add a leading depth axis along z:
(D, H, W) with ``D = (z_max - z_min) / voxel_z``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _count(lo: float, hi: float, step: float, name: str) -> int:
    n = (hi - lo) / step
    if hi <= lo or step <= 0:
        raise ValueError(f"{name}: need max > min and a positive step, got ({lo}, {hi}) / {step}")
    # A range that is not a whole number of cells would make the last cell partial and every
    # stage round differently; refuse it instead.
    if abs(n - round(n)) > 1e-6:
        raise ValueError(f"{name}: range ({lo}, {hi}) is not a whole number of {step} m cells")
    return int(round(n))


@dataclass(frozen=True)
class BEVGrid:
    """Metric extent and resolution of the BEV raster, ego frame, metres.

    Attributes:
        x_range: (min, max) along ego +x (forward).
        y_range: (min, max) along ego +y (left).
        z_range: (min, max) along ego +z (up); points outside are dropped by voxelization.
        cell_size: BEV cell edge (x and y), metres.
        voxel_z: voxel height, metres (the depth axis of voxel grids).
    """

    x_range: tuple[float, float] = (-51.2, 51.2)
    y_range: tuple[float, float] = (-51.2, 51.2)
    z_range: tuple[float, float] = (-5.0, 3.0)
    cell_size: float = 0.8
    voxel_z: float = 8.0

    def __post_init__(self):
        # Tuples even when built from YAML lists, so the grid stays hashable and comparable.
        for name in ("x_range", "y_range", "z_range"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2:
                raise ValueError(f"{name} must be (min, max), got {value}")
            object.__setattr__(self, name, value)
        _count(*self.x_range, self.cell_size, "x_range")
        _count(*self.y_range, self.cell_size, "y_range")
        _count(*self.z_range, self.voxel_z, "z_range")

    @property
    def width(self) -> int:
        """W: number of columns (along x)."""
        return _count(*self.x_range, self.cell_size, "x_range")

    @property
    def height(self) -> int:
        """H: number of rows (along y)."""
        return _count(*self.y_range, self.cell_size, "y_range")

    @property
    def depth(self) -> int:
        """D: number of voxel layers (along z)."""
        return _count(*self.z_range, self.voxel_z, "z_range")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of a BEV map."""
        return (self.height, self.width)

    @property
    def voxel_shape(self) -> tuple[int, int, int]:
        """(D, H, W) of a voxel grid."""
        return (self.depth, self.height, self.width)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """(x, y, z) edge of a voxel, metres."""
        return (self.cell_size, self.cell_size, self.voxel_z)

    def xy_to_cell(self, xy: Tensor) -> Tensor:
        """Metric xy -> integer cell indices.

        Args:
            xy: (..., 2+) metres, ego frame (extra columns ignored).
        Returns:
            (..., 2) int64 ``(row, col)``; may be out of range, see :meth:`in_range`.
        """
        col = torch.floor((xy[..., 0] - self.x_range[0]) / self.cell_size)
        row = torch.floor((xy[..., 1] - self.y_range[0]) / self.cell_size)
        return torch.stack([row, col], dim=-1).to(torch.int64)

    def in_range(self, xy: Tensor) -> Tensor:
        """(..., 2+) metres -> (...) bool: inside the xy extent (min inclusive, max exclusive)."""
        x, y = xy[..., 0], xy[..., 1]
        return (
            (x >= self.x_range[0]) & (x < self.x_range[1])
            & (y >= self.y_range[0]) & (y < self.y_range[1])
        )

    def in_range_3d(self, xyz: Tensor) -> Tensor:
        """(..., 3+) metres -> (...) bool: inside the xyz extent (min inclusive, max exclusive)."""
        z = xyz[..., 2]
        return self.in_range(xyz) & (z >= self.z_range[0]) & (z < self.z_range[1])

    def cell_centers(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """(H, W, 2) metric xy of every cell centre."""
        xs = self.x_range[0] + (torch.arange(self.width, dtype=torch.float64) + 0.5) * self.cell_size
        ys = self.y_range[0] + (torch.arange(self.height, dtype=torch.float64) + 0.5) * self.cell_size
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx, gy], dim=-1).to(dtype=dtype, device=device)

    def cell_to_xy(self, cells: Tensor) -> Tensor:
        """(..., 2) ``(row, col)`` -> (..., 2) float32 metric xy of the cell centres."""
        cells = cells.to(torch.float32)
        x = self.x_range[0] + (cells[..., 1] + 0.5) * self.cell_size
        y = self.y_range[0] + (cells[..., 0] + 0.5) * self.cell_size
        return torch.stack([x, y], dim=-1)
