"""Boxes3D against the nuScenes devkit's own Box (corners, points_in_box, round trip)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perception.structures import Boxes3D

nuscenes_dc = pytest.importorskip("nuscenes.utils.data_classes")
from nuscenes.utils.geometry_utils import points_in_box  # noqa: E402
from pyquaternion import Quaternion  # noqa: E402

Box = nuscenes_dc.Box


def random_boxes(n: int, seed: int = 0, dtype=torch.float64) -> Boxes3D:
    g = np.random.default_rng(seed)
    t = np.concatenate([
        g.uniform(-50, 50, (n, 2)), g.uniform(-2, 2, (n, 1)),   # centre
        g.uniform(0.3, 12, (n, 3)),                             # l, w, h
        g.uniform(-math.pi, math.pi, (n, 1)),                   # yaw
        g.uniform(-15, 15, (n, 2)),                             # velocity
    ], axis=1)
    return Boxes3D(torch.as_tensor(t, dtype=dtype))


def devkit_box(row: np.ndarray) -> Box:
    x, y, z, l, w, h, yaw, vx, vy = row
    return Box([x, y, z], [w, l, h], Quaternion(axis=[0, 0, 1], angle=yaw), velocity=(vx, vy, 0.0))


def random_transform(seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = Quaternion(axis=[0, 0, 1], angle=g.uniform(-math.pi, math.pi)).rotation_matrix
    T[:3, 3] = g.uniform(-500, 500, 3)
    return T


# ----------------------------------------------------------------------------- construction
def test_validation():
    with pytest.raises(ValueError):
        Boxes3D(torch.zeros(3, 7))
    with pytest.raises(ValueError):
        Boxes3D(torch.zeros(9))
    with pytest.raises(TypeError):
        Boxes3D(torch.zeros(2, 9, dtype=torch.int64))
    assert Boxes3D(torch.zeros(0)).tensor.shape == (0, 9)
    assert Boxes3D([[0.0] * 9]).dtype == torch.float32
    assert len(Boxes3D.empty()) == 0


def test_fields_and_indexing():
    b = random_boxes(6)
    t = b.tensor
    assert torch.equal(b.yaw, t[:, 6]) and torch.equal(b.dims, t[:, 3:6])
    assert torch.equal(b.center, t[:, :3]) and torch.equal(b.velocity, t[:, 7:9])
    assert torch.equal(b.l, t[:, 3]) and torch.equal(b.w, t[:, 4]) and torch.equal(b.h, t[:, 5])
    assert len(b) == 6
    assert torch.equal(b[2].tensor, t[2:3])
    assert torch.equal(b[-1].tensor, t[5:6])
    assert torch.equal(b[1:4].tensor, t[1:4])
    mask = t[:, 0] > 0
    assert torch.equal(b[mask].tensor, t[mask])
    assert torch.equal(b[torch.tensor([4, 0])].tensor, t[[4, 0]])
    assert torch.equal(b[[4, 0]].tensor, t[[4, 0]])
    assert torch.equal(Boxes3D.cat([b[:2], b[2:]]).tensor, t)
    assert b.to(torch.float32).dtype == torch.float32
    assert b.to("meta").device.type == "meta"


# ----------------------------------------------------------------------------- devkit equality
def test_corners_match_devkit_in_order():
    b = random_boxes(50, seed=1)
    ours = b.corners().numpy()
    assert ours.shape == (50, 8, 3)
    for i, row in enumerate(b.tensor.numpy()):
        np.testing.assert_allclose(ours[i], devkit_box(row).corners().T, atol=1e-9)


def test_bev_corners_are_ccw_footprint():
    b = random_boxes(30, seed=2)
    bev = b.bev_corners()
    assert bev.shape == (30, 4, 2)
    # Footprint = top face of corners(): front-left, rear-left, rear-right, front-right.
    torch.testing.assert_close(bev, b.corners()[:, [0, 4, 5, 1], :2])
    x, y = bev[..., 0], bev[..., 1]
    area = 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1)
    torch.testing.assert_close(area, b.l * b.w)  # positive: counter-clockwise


def test_points_in_boxes_match_devkit():
    b = random_boxes(40, seed=3)
    g = np.random.default_rng(4)
    # Points concentrated near the boxes so that both inside and outside occur often.
    centers = b.center.numpy()
    pts = centers[g.integers(0, 40, 4000)] + g.normal(0, 3, (4000, 3))
    ours = b.points_in_boxes(torch.as_tensor(pts))
    assert ours.shape == (40, 4000) and ours.dtype == torch.bool
    expected = np.stack([points_in_box(devkit_box(r), pts.T) for r in b.tensor.numpy()])
    assert expected.sum() > 200
    np.testing.assert_array_equal(ours.numpy(), expected)
    # float32 boxes / points give the same answer away from the faces.
    assert (b.to(torch.float32).points_in_boxes(torch.as_tensor(pts, dtype=torch.float32)).numpy()
            != expected).sum() <= 2


def test_points_in_boxes_with_lag_test_where_the_box_stood_then():
    # A box moving at (4, -3) m/s; a point measured 0.5 s earlier sat (2, -1.5) m behind.
    b = Boxes3D(torch.tensor([[10.0, 5.0, 0.0, 4.0, 2.0, 1.5, 0.6, 4.0, -3.0],
                              [-10.0, 5.0, 0.0, 4.0, 2.0, 1.5, 0.0, float("nan"), float("nan")]],
                             dtype=torch.float64))
    pts = torch.tensor([[10.0, 5.0, 0.0], [8.0, 6.5, 0.2], [8.0, 6.5, 0.2], [-10.5, 5.2, 0.0]],
                       dtype=torch.float64)
    lag = torch.tensor([0.0, 0.5, 0.0, 0.5], dtype=torch.float64)
    plain = b.points_in_boxes(pts)
    moved = b.points_in_boxes(pts, lag)
    assert plain[0].tolist() == [True, False, False, False]
    assert moved[0].tolist() == [True, True, False, False]   # the old return, not the new one
    # Unknown velocity counts as standing; zero lag is the plain test.
    assert torch.equal(moved[1], plain[1]) and plain[1, 3]
    assert torch.equal(b.points_in_boxes(pts, torch.zeros(4, dtype=torch.float64)), plain)


def test_round_trip_devkit_box():
    b = random_boxes(25, seed=5)
    originals = [devkit_box(r) for r in b.tensor.numpy()]
    ours = Boxes3D.from_nuscenes(
        [o.center for o in originals], [o.wlh for o in originals],
        [o.orientation.elements for o in originals], [o.velocity for o in originals],
        dtype=torch.float64,
    )
    torch.testing.assert_close(ours.tensor, b.tensor)
    center, wlh, quat, vel = ours.to_nuscenes()
    for i, o in enumerate(originals):
        back = Box(center[i], wlh[i], Quaternion(quat[i]), velocity=(vel[i, 0], vel[i, 1], 0.0))
        assert back == o, (back, o)


def test_from_nuscenes_yaw_matches_pyquaternion_on_tilted_quaternions():
    g = np.random.default_rng(6)
    quats = [Quaternion(axis=[0, 0, 1], angle=g.uniform(-3, 3))
             * Quaternion(axis=g.normal(size=3), angle=0.02) for _ in range(20)]
    b = Boxes3D.from_nuscenes(np.zeros((20, 3)), np.ones((20, 3)), [q.elements for q in quats],
                              dtype=torch.float64)
    # The heading of the rotated +x axis, which is the devkit's yaw for small tilts.
    heading = np.array([q.rotate([1.0, 0, 0]) for q in quats])
    np.testing.assert_allclose(b.yaw.numpy(), np.arctan2(heading[:, 1], heading[:, 0]), atol=1e-12)
    from nuscenes.eval.common.utils import quaternion_yaw

    np.testing.assert_allclose(b.yaw.numpy(), [quaternion_yaw(q) for q in quats], atol=1e-12)
    assert torch.isnan(b.velocity).all()


def test_transform_matches_devkit_box_motion():
    b = random_boxes(20, seed=7)
    T = random_transform(8)
    moved = b.transform(torch.as_tensor(T))
    q = Quaternion(matrix=T[:3, :3])
    for i, row in enumerate(b.tensor.numpy()):
        box = devkit_box(row)
        box.rotate(q)
        box.translate(T[:3, 3])
        np.testing.assert_allclose(moved.tensor[i, :3].numpy(), box.center, atol=1e-9)
        np.testing.assert_allclose(moved.corners()[i].numpy(), box.corners().T, atol=1e-9)
        np.testing.assert_allclose(moved.tensor[i, 7:9].numpy(), box.velocity[:2], atol=1e-9)
        assert -math.pi <= moved.yaw[i] <= math.pi


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_transform_inverse_and_point_membership_invariance(seed):
    b = random_boxes(8, seed=seed)
    T = random_transform(seed + 1)
    back = b.transform(torch.as_tensor(T)).transform(torch.as_tensor(np.linalg.inv(T)))
    torch.testing.assert_close(back.tensor[:, :6], b.tensor[:, :6])
    torch.testing.assert_close(back.tensor[:, 7:], b.tensor[:, 7:])
    dyaw = torch.remainder(back.yaw - b.yaw + math.pi, 2 * math.pi) - math.pi
    assert dyaw.abs().max() < 1e-9
    # Membership is frame independent.
    g = np.random.default_rng(seed)
    pts = b.center.numpy()[g.integers(0, 8, 500)] + g.normal(0, 2, (500, 3))
    pts_a = pts @ T[:3, :3].T + T[:3, 3]
    before = b.points_in_boxes(torch.as_tensor(pts))
    after = b.transform(torch.as_tensor(T)).points_in_boxes(torch.as_tensor(pts_a))
    assert (before != after).sum() <= 1  # a point exactly on a face may flip by rounding


def test_nan_velocity_survives_transform():
    b = random_boxes(3)
    b.tensor[:, 7:9] = float("nan")
    assert torch.isnan(b.transform(torch.as_tensor(random_transform(0))).velocity).all()
