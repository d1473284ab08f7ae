import dataclasses

import pytest
import torch

from perception.structures import BEVGrid


def test_shape_and_cells():
    g = BEVGrid(x_range=(-10, 30), y_range=(-20, 20), z_range=(-3, 5), cell_size=0.5, voxel_z=0.25)
    assert g.shape == (80, 80) and g.width == 80 and g.height == 80
    assert g.voxel_shape == (32, 80, 80) and g.voxel_size == (0.5, 0.5, 0.25)
    xy = torch.tensor([[-10.0, -20.0], [-9.51, -19.99], [29.99, 19.99], [0.0, 0.0], [30.0, 0.0]])
    cells = g.xy_to_cell(xy)
    assert cells.tolist() == [[0, 0], [0, 0], [79, 79], [40, 20], [40, 80]]
    assert g.in_range(xy).tolist() == [True, True, True, True, False]
    assert g.in_range_3d(torch.tensor([[0.0, 0, 4.9], [0.0, 0, 5.0]])).tolist() == [True, False]


def test_centers_round_trip():
    g = BEVGrid()
    centers = g.cell_centers()
    assert centers.shape == (*g.shape, 2)
    rows, cols = torch.meshgrid(torch.arange(g.height), torch.arange(g.width), indexing="ij")
    assert torch.equal(g.xy_to_cell(centers), torch.stack([rows, cols], -1))
    torch.testing.assert_close(g.cell_to_xy(g.xy_to_cell(centers)), centers)
    # Row index grows with y, column index with x.
    assert centers[1, 0, 1] > centers[0, 0, 1] and centers[0, 1, 0] > centers[0, 0, 0]


def test_validation_and_frozen():
    with pytest.raises(ValueError):
        BEVGrid(x_range=(-10, 10.3), cell_size=0.5)
    with pytest.raises(ValueError):
        BEVGrid(x_range=(10, -10))
    g = BEVGrid(x_range=[-51.2, 51.2])  # lists from YAML become tuples
    assert g.x_range == (-51.2, 51.2) and hash(g) == hash(BEVGrid())
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.cell_size = 1.0
