"""Flip test-time augmentation (perception.models.tta): mirrored batches, maps brought back."""
import math

import pytest
import torch

from perception.data.augment import bev_matrix, transform_boxes
from perception.models import build_model
from perception.models.config import HeadConfig, ModelConfig
from perception.models.tta import flip_batch, merge_heads, unflip_heads
from perception.structures import Boxes3D, GroundTruth
from perception.structures.grid import BEVGrid

GRID = BEVGrid(x_range=(-16.0, 16.0), y_range=(-16.0, 16.0), z_range=(-3.0, 1.0), cell_size=0.5,
               voxel_z=4.0)
GROUPS = HeadConfig().class_groups


def _gt() -> GroundTruth:
    boxes = torch.tensor([
        [3.3, -4.7, -0.9, 4.5, 1.9, 1.6, 0.3, 2.0, -1.0],             # car
        [-10.2, 7.9, -0.5, 10.0, 2.8, 3.5, -2.9, -4.0, 6.0],          # truck
        [0.6, 0.6, -1.2, 0.7, 0.6, 1.7, math.pi - 0.01, 0.5, 0.2],    # pedestrian
        [-7.3, -11.1, -1.0, 1.9, 0.7, 1.2, 1.6, -1.5, -0.5],          # bicycle
    ])
    return GroundTruth(Boxes3D(boxes), torch.tensor([0, 1, 5, 7]),
                       attributes=torch.tensor([5, 6, 2, 3]))   # moving, parked, standing, with_rider


def _by_label(det):
    return det[torch.argsort(det.labels)]


@pytest.mark.parametrize("flip", ["x", "y", "xy"])
def test_maps_of_the_mirrored_scene_come_back_to_the_original_boxes(kit, flip):
    """Perfect maps of the mirrored ground truth, brought back, decode to the original boxes."""
    gt = _gt()
    M = bev_matrix(flip_x="x" in flip, flip_y="y" in flip)
    mirrored = GroundTruth(transform_boxes(gt.boxes, M), gt.labels, attributes=gt.attributes)
    head = kit.small_head(GRID, GROUPS)
    det = _by_label(head.decode(unflip_heads(kit.ideal_outputs(mirrored, GRID, GROUPS), flip))[0])
    direct = _by_label(head.decode(kit.ideal_outputs(gt, GRID, GROUPS))[0])
    assert det.labels.tolist() == gt.labels.tolist() == direct.labels.tolist()
    assert det.attributes.tolist() == gt.attributes.tolist()
    torch.testing.assert_close(det.boxes.tensor[:, :6], gt.boxes.tensor[:, :6], atol=1e-4, rtol=0)
    yaw_err = torch.remainder(det.boxes.tensor[:, 6] - gt.boxes.tensor[:, 6] + math.pi,
                              2 * math.pi) - math.pi
    assert yaw_err.abs().max() < 1e-4
    torch.testing.assert_close(det.boxes.tensor[:, 7:], gt.boxes.tensor[:, 7:], atol=1e-4, rtol=0)
    # Merging a view with itself changes nothing.
    same = merge_heads([kit.ideal_outputs(gt, GRID, GROUPS)] * 2)
    torch.testing.assert_close(_by_label(head.decode(same)[0]).boxes.tensor, direct.boxes.tensor)


@pytest.mark.parametrize("flip", ["x", "y", "xy"])
def test_half_turn_maps_of_the_mirrored_scene_come_back(kit, flip):
    """With the half-turn heading code for barriers (``head.half_turn``), the maps of the
    mirrored scene brought back decode to each barrier's yaw modulo pi; brought back as if the
    code were the plain one, the x mirror leaves them off (a y mirror changes both codes alike,
    and xy is a half turn)."""
    boxes = torch.tensor([[-6.0, 5.0, -1.0, 0.5, 2.5, 1.0, 0.4, 0.0, 0.0],
                          [6.0, 9.0, -1.0, 0.5, 2.5, 1.0, -1.1, 0.0, 0.0]])
    gt = GroundTruth(Boxes3D(boxes), torch.tensor([9, 9]), attributes=torch.tensor([-1, -1]))
    M = bev_matrix(flip_x="x" in flip, flip_y="y" in flip)
    mirrored = GroundTruth(transform_boxes(gt.boxes, M), gt.labels, attributes=gt.attributes)
    head = kit.small_head(GRID, GROUPS, half_turn=("barrier",))
    maps = kit.ideal_outputs(mirrored, GRID, GROUPS, half_turn=head.half_turn)

    def yaw_error(half_turn):
        det = head.decode(unflip_heads(maps, flip, half_turn))[0]
        det = det[torch.argsort(det.boxes.x)]
        assert det.labels.tolist() == [9, 9]
        d = det.boxes.tensor[:, 6] - boxes[:, 6]
        return (torch.remainder(d + math.pi / 2, math.pi) - math.pi / 2).abs().max()

    assert yaw_error(head.half_turn) < 1e-4
    if flip == "x":
        assert yaw_error(None) > 0.5


@pytest.mark.parametrize("flip", ["x", "y", "xy"])
def test_flip_batch_mirrors_every_sensor_and_twice_is_the_identity(kit, flip):
    batch = kit.make_batch(grid=kit.grid, batch_size=2)
    f = flip_batch(batch, flip)
    sx, sy = (-1.0 if "x" in flip else 1.0), (-1.0 if "y" in flip else 1.0)
    for orig, new in zip(batch.lidar_points, f.lidar_points):
        torch.testing.assert_close(new[:, 0], sx * orig[:, 0], rtol=0, atol=0)
        torch.testing.assert_close(new[:, 1], sy * orig[:, 1], rtol=0, atol=0)
        torch.testing.assert_close(new[:, 2:], orig[:, 2:], rtol=0, atol=0)
    vx, vy = batch.radar_fields.index("vx_comp"), batch.radar_fields.index("vy_comp")
    for orig, new in zip(batch.radar_points, f.radar_points):
        torch.testing.assert_close(new[:, [0, vx]], sx * orig[:, [0, vx]], rtol=0, atol=0)
        torch.testing.assert_close(new[:, [1, vy]], sy * orig[:, [1, vy]], rtol=0, atol=0)
    # The camera looks at the mirrored scene: a point in front of a camera maps to the mirrored
    # ego point through the new extrinsics.
    p_cam = torch.tensor([0.3, -0.2, 7.0, 1.0])
    ego = batch.ego_T_camera[0, 0] @ p_cam
    torch.testing.assert_close(f.ego_T_camera[0, 0] @ p_cam,
                               ego * torch.tensor([sx, sy, 1.0, 1.0]))
    assert torch.equal(f.images, batch.images) and torch.equal(f.img_aug, batch.img_aug)
    torch.testing.assert_close(f.gt[0].boxes.tensor[:, 0], sx * batch.gt[0].boxes.tensor[:, 0])
    back = flip_batch(f, flip)
    for a, b in zip(back.lidar_points + back.radar_points, batch.lidar_points + batch.radar_points):
        assert torch.equal(a, b)
    assert torch.equal(back.ego_T_camera, batch.ego_T_camera)


def test_predict_with_a_flip_is_equivariant_under_that_flip(kit):
    """With test_flips=("x",) the views of a frame and of its mirror image are the same two
    forwards, so the detections of the mirrored frame are the mirrored detections."""
    torch.manual_seed(0)
    cfg = kit.tiny_config()
    model = build_model(ModelConfig(**{**cfg.__dict__, "test_flips": ("x",)}))
    batch = kit.make_batch(grid=kit.grid, batch_size=1)
    model.train()
    model(batch)  # BatchNorm statistics that are not the init ones
    model.eval()
    assert model.test_flips == ("x",)
    det = model.predict(batch)[0]
    model.test_flips = ()
    plain = model.predict(batch)[0]
    model.test_flips = ("x",)
    mirrored = model.predict(flip_batch(batch, "x"))[0]
    assert len(det) > 0 and len(mirrored) == len(det)
    torch.testing.assert_close(mirrored.scores, det.scores)
    back = transform_boxes(mirrored.boxes, bev_matrix(flip_x=True))
    # Pair each detection with the nearest mirrored-back one of the same label (sorting by
    # position pairs wrongly where two boxes share an x to rounding).
    same = det.labels[:, None] == mirrored.labels[None, :]
    dist = torch.cdist(det.boxes.tensor[:, :3], back.tensor[:, :3]).masked_fill(~same, 1e9)
    nearest = dist.argmin(1)
    # Every box but a rare tie: an untrained model's heatmap has neighbouring cells of equal
    # score, and which one top-k keeps can follow the float summation order (one box of 240
    # moved a cell with one torch thread).
    close = ((back.tensor[nearest, :6] - det.boxes.tensor[:, :6]).abs() <= 1e-4).all(1)
    assert close.float().mean() >= 0.99, int((~close).sum())
    # ... and the averaged views are not the plain forward.
    assert len(plain) != len(det) or not torch.allclose(plain.scores, det.scores)


def test_test_flips_are_validated():
    with pytest.raises(ValueError, match="test_flips must be distinct values"):
        ModelConfig(test_flips=("z",))
    with pytest.raises(ValueError, match="test_flips must be distinct values"):
        ModelConfig(test_flips=("x", "x"))
    off_centre = BEVGrid(x_range=(0.0, 51.2), y_range=(-51.2, 51.2), z_range=(-5.0, 3.0),
                         cell_size=0.8, voxel_z=8.0)
    with pytest.raises(ValueError, match="x_range is"):
        ModelConfig(grid=off_centre, test_flips=("y", "xy"))
    assert ModelConfig(grid=off_centre, test_flips=("y",)).test_flips == ("y",)
