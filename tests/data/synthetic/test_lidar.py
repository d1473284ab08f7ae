"""Tests of the synthetic LiDAR model (perception/data/synthetic/lidar.py).

Each test builds its own small Snapshot (boxes on a flat road), so the tests do not depend on the
scenario generator.
"""
from __future__ import annotations

import numpy as np
import pytest

from perception.data.synthetic.geometry import MATERIAL, GroundMap, Parts, Snapshot
from perception.data.synthetic.lidar import (LidarModel, echo_mask, simulate_lidar,
                                            write_lidar_pcd_bin)

H = 1.84  # LIDAR_TOP height above the ground in nuScenes, metres
EXACT = LidarModel(range_noise_m=0.0, dropout=0.0, weak_dropout=0.0)


def make_snapshot(boxes) -> Snapshot:
    """boxes: list of (center (3,), size (3,), yaw, material name). Ground: road."""
    n = len(boxes)
    parts = Parts(
        center=np.array([b[0] for b in boxes], dtype=np.float64).reshape(n, 3),
        size=np.array([b[1] for b in boxes], dtype=np.float64).reshape(n, 3),
        yaw=np.array([b[2] for b in boxes], dtype=np.float64).reshape(n),
        velocity=np.zeros((n, 3)),
        material=np.array([MATERIAL[b[3]] for b in boxes], dtype=np.int64).reshape(n),
        color=np.zeros((n, 3), dtype=np.uint8),
        instance=np.arange(n, dtype=np.int64),
    )
    ground = GroundMap(np.full((400, 400), MATERIAL["road"], dtype=np.uint8), -200.0, -200.0, 1.0)
    return Snapshot(0, parts, ground)


def lidar_pose(x: float, y: float, ego_yaw: float, h: float = H) -> np.ndarray:
    """global_T_sensor of a LIDAR_TOP (x right, y forward) on an ego at (x, y) heading ego_yaw."""
    a = ego_yaw - np.pi / 2
    T = np.eye(4)
    T[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    T[:3, 3] = (x, y, h)
    return T


def street(n_buildings: int = 6) -> Snapshot:
    """A straight street along global x: buildings both sides, a few parked cars and poles."""
    boxes = []
    for i in range(n_buildings):
        x = -60.0 + i * 120.0 / max(n_buildings - 1, 1)
        boxes.append(((x, 20.0, 6.0), (18.0, 12.0, 12.0), 0.0, "building"))
        boxes.append(((x + 5.0, -20.0, 5.0), (16.0, 12.0, 10.0), 0.0, "building"))
    for x in (-25.0, -8.0, 9.0, 30.0):
        boxes.append(((x, -5.5, 0.75), (4.3, 1.8, 1.1), 0.0, "vehicle"))
        boxes.append(((x, -5.5, 1.6), (2.2, 1.6, 0.6), 0.0, "glass"))
    for x in (-30.0, -15.0, 0.0, 15.0, 30.0):
        boxes.append(((x, 9.0, 3.0), (0.25, 0.25, 6.0), 0.0, "pole"))
    return make_snapshot(boxes)


def to_global(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    return points[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]


def test_hit_at_analytic_distance():
    # Ego at (100, 50) heading +y; a box whose near face is 10 m ahead (global y = 60).
    T = lidar_pose(100.0, 50.0, np.pi / 2)
    snap = make_snapshot([((100.0, 61.0, 1.0), (4.0, 2.0, 2.0), 0.0, "vehicle")])
    pts = simulate_lidar(snap, T, np.random.default_rng(0), EXACT)
    on_face = (np.abs(pts[:, 0]) < 1.8) & (pts[:, 1] > 5.0) & (pts[:, 2] > -H + 0.05)
    assert on_face.sum() > 30
    # Sensor frame y is forward: the face is at y = 10 exactly (no noise).
    np.testing.assert_allclose(pts[on_face, 1], 10.0, atol=1e-3)
    g = to_global(pts[on_face], T)
    assert np.all((g[:, 2] >= -1e-3) & (g[:, 2] <= 2.0 + 1e-3))
    # The straight-ahead ray of the near-horizontal ring: range 10 m along +y.
    ahead = on_face & (np.abs(pts[:, 0]) < 0.03) & (np.abs(pts[:, 2]) < 0.01)
    assert ahead.any()
    np.testing.assert_allclose(np.linalg.norm(pts[ahead, :3], axis=1), 10.0, atol=2e-3)


def test_top_face_seen_from_above():
    # A low box: descending beams enter through the top face at its height.
    T = lidar_pose(0.0, 0.0, 0.0)
    snap = make_snapshot([((8.0, 0.0, 0.25), (6.0, 6.0, 0.5), 0.0, "barrier")])
    pts = simulate_lidar(snap, T, np.random.default_rng(0), EXACT)
    g = to_global(pts, T)
    top = (g[:, 0] > 5.2) & (g[:, 0] < 10.9) & (np.abs(g[:, 1]) < 2.9)
    assert top.sum() > 50
    np.testing.assert_allclose(g[top, 2], 0.5, atol=1e-3)


def test_occlusion_hides_box_behind():
    T = lidar_pose(0.0, 0.0, 0.0)  # ego heading +x: sensor y axis is global +x
    front = ((10.0, 0.0, 1.5), (1.0, 6.0, 3.0), 0.0, "building")
    hidden = ((20.0, 0.0, 1.0), (1.0, 2.0, 2.0), 0.0, "vehicle")
    pts = simulate_lidar(make_snapshot([front, hidden]), T, np.random.default_rng(1))
    g = to_global(pts, T)
    behind = (g[:, 0] > 10.6) & (np.abs(g[:, 1]) < 2.0)
    assert behind.sum() == 0
    # Control: without the wall the box is seen.
    pts = simulate_lidar(make_snapshot([hidden]), T, np.random.default_rng(1))
    g = to_global(pts, T)
    assert ((np.abs(g[:, 0] - 19.5) < 0.1) & (np.abs(g[:, 1]) < 1.0) & (g[:, 2] > 0.1)).sum() > 20


def test_ground_returns_at_zero():
    T = lidar_pose(3.0, -2.0, 0.7)
    model = LidarModel()
    pts = simulate_lidar(make_snapshot([]), T, np.random.default_rng(2), model)
    pts = pts[echo_mask(pts, model)]
    g = to_global(pts, T)
    # Range noise of 2 cm along the ray moves z by at most that much.
    assert np.abs(g[:, 2]).max() < 6 * model.range_noise_m
    # No upward beam hits anything without parts: only the beams below the horizon return.
    assert np.all(pts[:, 2] < 0)
    assert len(pts) > 15000
    # Ground ranges: from where the lowest unblocked beam lands (~3 m) out to max range.
    r = np.hypot(pts[:, 0], pts[:, 1])
    assert r.min() > 2.5 and r.max() <= model.max_range_m


def test_rings_count_and_fields():
    T = lidar_pose(0.0, 0.0, 0.05)
    pts = simulate_lidar(street(), T, np.random.default_rng(3))
    assert pts.dtype == np.float32 and pts.shape[1] == 5
    # One entry per firing, as in real nuScenes files: every ring has exactly azimuth_steps.
    np.testing.assert_array_equal(np.bincount(pts[:, 4].astype(int)), np.full(32, 1084))
    np.testing.assert_array_equal(pts[:, 4].reshape(1084, 32), np.tile(np.arange(32), (1084, 1)))
    pts = pts[echo_mask(pts)]
    rings = np.unique(pts[:, 4])
    np.testing.assert_array_equal(rings, np.arange(32, dtype=np.float32))
    assert 20000 <= len(pts) <= 40000
    assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 255
    np.testing.assert_array_equal(pts[:, 3], np.rint(pts[:, 3]))
    # Ring 0 is the lowest beam: its points are the steepest below the sensor.
    el = np.degrees(np.arctan2(pts[:, 2], np.hypot(pts[:, 0], pts[:, 1])))
    assert abs(np.median(el[pts[:, 4] == 0]) + 30.67) < 0.5
    assert abs(np.median(el[pts[:, 4] == 31]) - 10.67) < 0.5


def test_deterministic_for_seed():
    T = lidar_pose(1.0, 2.0, 0.3)
    snap = street()
    a = simulate_lidar(snap, T, np.random.default_rng(7))
    b = simulate_lidar(snap, T, np.random.default_rng(7))
    c = simulate_lidar(snap, T, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_ego_exclusion_zone_is_empty():
    # A pole standing right against the ego body (inside the exclusion zone) and one just outside.
    T = lidar_pose(0.0, 0.0, 0.0)  # sensor x right = global -y, sensor y forward = global +x
    inside = ((2.3, -0.8, 1.0), (0.2, 0.2, 2.0), 0.0, "pole")
    outside = ((0.0, -1.6, 1.0), (0.2, 0.2, 2.0), 0.0, "pole")
    model = LidarModel()
    pts = simulate_lidar(make_snapshot([inside, outside]), T, np.random.default_rng(4), model)
    no_echo = pts[~echo_mask(pts, model)]
    np.testing.assert_allclose(no_echo[:, :3].mean(0), model.no_echo_xyz, atol=1e-3)
    pts = pts[echo_mask(pts, model)]
    zone = (np.abs(pts[:, 0]) < model.ego_exclusion_half_x) & (np.abs(pts[:, 1]) < model.ego_exclusion_half_y)
    assert zone.sum() == 0
    near_out = (np.abs(pts[:, 0] - 1.6) < 0.2) & (np.abs(pts[:, 1]) < 0.2)
    assert near_out.sum() > 0


def test_intensity_follows_reflectivity():
    T = lidar_pose(0.0, 0.0, 0.0)
    cone = ((8.0, 3.0, 0.5), (0.5, 0.5, 1.0), 0.0, "traffic_cone")
    tire = ((8.0, -3.0, 0.5), (0.5, 0.5, 1.0), 0.0, "tire")
    pts = simulate_lidar(make_snapshot([cone, tire]), T, np.random.default_rng(5))
    g = to_global(pts, T)
    on_cone = (np.abs(g[:, 0] - 7.75) < 0.1) & (np.abs(g[:, 1] - 3.0) < 0.3)
    on_tire = (np.abs(g[:, 0] - 7.75) < 0.1) & (np.abs(g[:, 1] + 3.0) < 0.3)
    assert on_cone.sum() > 5 and on_tire.sum() > 3
    assert np.median(pts[on_cone, 3]) > 5 * np.median(pts[on_tire, 3])


def test_pcd_bin_round_trip(tmp_path):
    from nuscenes.utils.data_classes import LidarPointCloud

    pts = simulate_lidar(street(), lidar_pose(0.0, 0.0, 0.0), np.random.default_rng(6))
    path = tmp_path / "sweep.pcd.bin"
    write_lidar_pcd_bin(path, pts)
    assert path.stat().st_size == pts.size * 4
    pc = LidarPointCloud.from_file(str(path))  # keeps x, y, z, intensity
    np.testing.assert_array_equal(pc.points, pts[:, :4].T)
    raw = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    np.testing.assert_array_equal(raw, pts)


def test_pcd_bin_rejects_bad_shape(tmp_path):
    with pytest.raises(ValueError):
        write_lidar_pcd_bin(tmp_path / "x.pcd.bin", np.zeros((3, 4), dtype=np.float32))
