"""Tests of the synthetic radar model (perception/data/synthetic/radar.py).

Each test builds its own small Snapshot, so the tests do not depend on the scenario generator.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from perception.data.synthetic.geometry import MATERIAL, GroundMap, Parts, Snapshot
from perception.data.synthetic.radar import (CORNER_RADAR, FRONT_RADAR, RADAR_FIELDS, RadarModel,
                                             simulate_radar, write_radar_pcd)

QUIET = dataclasses.replace(FRONT_RADAR, clutter_rate=0.0, spurious_rate=0.0)
COL = {name: i for i, name in enumerate(RADAR_FIELDS)}


def make_snapshot(boxes) -> Snapshot:
    """boxes: list of (center (3,), size (3,), yaw, material name, velocity (3,), instance)."""
    n = len(boxes)
    parts = Parts(
        center=np.array([b[0] for b in boxes], dtype=np.float64).reshape(n, 3),
        size=np.array([b[1] for b in boxes], dtype=np.float64).reshape(n, 3),
        yaw=np.array([b[2] for b in boxes], dtype=np.float64).reshape(n),
        velocity=np.array([b[4] for b in boxes], dtype=np.float64).reshape(n, 3),
        material=np.array([MATERIAL[b[3]] for b in boxes], dtype=np.int64).reshape(n),
        color=np.zeros((n, 3), dtype=np.uint8),
        instance=np.array([b[5] for b in boxes], dtype=np.int64).reshape(n),
    )
    ground = GroundMap(np.full((10, 10), MATERIAL["road"], dtype=np.uint8), -5.0, -5.0, 1.0)
    return Snapshot(0, parts, ground)


def car(x, y, v=(0.0, 0.0, 0.0), inst=0, yaw=0.0):
    return [((x, y, 0.75), (4.3, 1.8, 1.1), yaw, "vehicle", v, inst),
            ((x - 0.3, y, 1.6), (2.2, 1.6, 0.6), yaw, "glass", v, inst)]


def radar_pose(x=0.0, y=0.0, yaw=0.0, h=0.5):
    T = np.eye(4)
    T[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    T[:3, 3] = (x, y, h)
    return T


def cluttered_street():
    """Street along +x: building walls both sides, poles, parked and moving cars."""
    boxes = []
    for i, x in enumerate(np.arange(-40.0, 150.0, 22.0)):
        boxes.append(((x, 18.0, 6.0), (20.0, 10.0, 12.0), 0.0, "building", (0, 0, 0), -1))
        boxes.append(((x + 8, -18.0, 5.0), (20.0, 10.0, 10.0), 0.0, "building", (0, 0, 0), -1))
    for x in np.arange(-30.0, 150.0, 12.0):
        boxes.append(((x, 9.0, 3.0), (0.25, 0.25, 6.0), 0.0, "pole", (0, 0, 0), -1))
        boxes.append(((x + 6, -9.0, 3.0), (0.25, 0.25, 6.0), 0.0, "pole", (0, 0, 0), -1))
    inst = 0
    for x in (15.0, 40.0, 70.0):
        boxes += car(x, -5.5, inst=inst)
        inst += 1
    for x, v in ((25.0, 6.0), (60.0, -8.0)):
        boxes += car(x, 2.0 if v > 0 else -2.0, v=(v, 0.0, 0.0), inst=inst)
        inst += 1
    return make_snapshot(boxes)


def outside_all_boxes(points, snap, T):
    """(N,) bool: radar point (sensor frame, z=0) lies outside every annotated object's footprint
    (grown by 0.5 m for position noise); those are clutter."""
    g = points[:, :2].astype(np.float64) @ T[:2, :2].T + T[:2, 3]
    p = snap.parts
    inside = np.zeros(len(points), dtype=bool)
    for inst in np.unique(p.instance[p.instance >= 0]):
        m = p.instance == inst
        c, s, yaw = p.center[m][0], p.size[m].max(axis=0), p.yaw[m][0]
        d = g - c[:2]
        lx = np.cos(yaw) * d[:, 0] + np.sin(yaw) * d[:, 1]
        ly = -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1]
        inside |= (np.abs(lx) < s[0] / 2 + 0.5) & (np.abs(ly) < s[1] / 2 + 0.5)
    return ~inside


def test_fields_fov_and_limits():
    snap = cluttered_street()
    T = radar_pose(0.0, 0.3)
    for model in (FRONT_RADAR, CORNER_RADAR):
        pts = simulate_radar(snap, T, np.array([8.0, 0.0, 0.0]), np.random.default_rng(0), model)
        assert pts.dtype == np.float32 and pts.shape[1] == 18
        assert 0 < len(pts) <= model.max_returns
        assert np.all(pts[:, COL["z"]] == 0)
        np.testing.assert_array_equal(pts[:, COL["id"]], np.arange(len(pts)))
        r = np.hypot(pts[:, 0], pts[:, 1])
        assert np.all(np.diff(r) >= -1e-5)  # sorted by range, as the sensor reports
        az = np.degrees(np.abs(np.arctan2(pts[:, 1], pts[:, 0])))
        # Within the lobes (allowing for azimuth noise and the 0.2 m output grid).
        near = (az <= model.near_fov_deg + 2.0) & (r <= model.near_range_m + 1.0)
        far = (az <= model.far_fov_deg + 1.0) & (r <= model.far_range_m + 1.0)
        assert np.all(near | far)
        assert np.all(pts[:, COL["is_quality_valid"]] == 1)


def test_at_most_max_returns():
    heavy = dataclasses.replace(FRONT_RADAR, clutter_rate=600.0)
    pts = simulate_radar(cluttered_street(), radar_pose(), np.zeros(3), np.random.default_rng(1), heavy)
    assert len(pts) == 125
    small = dataclasses.replace(heavy, max_returns=40)
    assert len(simulate_radar(cluttered_street(), radar_pose(), np.zeros(3),
                              np.random.default_rng(1), small)) == 40


def test_doppler_moving_car_and_static_wall():
    ego_v = np.array([10.0, 0.0, 0.0])
    car_v = np.array([4.0, 0.0, 0.0])
    wall = ((25.0, 9.0, 2.0), (30.0, 0.5, 4.0), 0.0, "building", (0, 0, 0), -1)
    snap = make_snapshot(car(30.0, 0.0, v=car_v, inst=0) + [wall])
    T = radar_pose(0.0, 0.0, 0.0)
    pts = np.concatenate([simulate_radar(snap, T, ego_v, np.random.default_rng(s), QUIET)
                          for s in range(5)])
    x, y = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
    r = np.hypot(x, y)
    ux, uy = x / r, y / r
    vx, vy = pts[:, COL["vx"]], pts[:, COL["vy"]]
    vxc, vyc = pts[:, COL["vx_comp"]], pts[:, COL["vy_comp"]]
    on_car = (np.abs(x - 30.0) < 3.0) & (np.abs(y) < 1.5)
    on_wall = np.abs(y - 9.0) < 1.5
    assert on_car.sum() >= 3 and on_wall.sum() >= 3
    # Velocities lie along the line of sight (the radar measures radial velocity only).
    np.testing.assert_allclose(vx * uy - vy * ux, 0.0, atol=1e-3)
    np.testing.assert_allclose(vxc * uy - vyc * ux, 0.0, atol=1e-3)
    radial_c = vxc * ux + vyc * uy
    radial = vx * ux + vy * uy
    # Car: compensated radial velocity is the car's own, raw is relative to the ego.
    true_c = car_v[0] * ux[on_car]
    assert np.abs(radial_c[on_car] - true_c).max() < 0.6
    assert np.abs(radial[on_car] - (true_c - ego_v[0] * ux[on_car])).max() < 0.8
    # Wall: ~0 compensated, raw shows the ego's motion.
    assert np.abs(radial_c[on_wall]).max() < 0.6
    assert np.abs(radial[on_wall] + ego_v[0] * ux[on_wall]).max() < 0.8
    assert np.all(np.isin(pts[on_wall, COL["dyn_prop"]], (1, 3)))
    assert np.all(pts[on_car, COL["dyn_prop"]] == 0)  # moving away from the sensor


def test_oncoming_and_crossing_states():
    T = radar_pose()
    oncoming = make_snapshot(car(30.0, 0.0, v=(-8.0, 0.0, 0.0)))
    pts = simulate_radar(oncoming, T, np.zeros(3), np.random.default_rng(2), QUIET)
    assert len(pts) and np.all(pts[:, COL["dyn_prop"]] == 2)
    crossing = make_snapshot(car(30.0, 0.0, v=(0.0, 8.0, 0.0), yaw=np.pi / 2))
    pts = simulate_radar(crossing, T, np.zeros(3), np.random.default_rng(2), QUIET)
    assert len(pts) and np.all(pts[:, COL["dyn_prop"]] == 6)


def test_occluded_car_gives_no_returns():
    hidden = car(40.0, 0.0, v=(5.0, 0.0, 0.0), inst=0)
    wall = [((20.0, 0.0, 2.5), (1.0, 12.0, 5.0), 0.0, "building", (0, 0, 0), -1)]
    T = radar_pose()
    seen = occluded = 0
    for s in range(10):
        rng = np.random.default_rng(s)
        p = simulate_radar(make_snapshot(hidden + wall), T, np.zeros(3), rng, QUIET)
        occluded += int(((p[:, 0] > 21.0)).sum())
        p = simulate_radar(make_snapshot(hidden), T, np.zeros(3), np.random.default_rng(s), QUIET)
        seen += int((np.abs(p[:, 0] - 40.0) < 3.0).sum())
    assert occluded == 0
    assert seen >= 10  # control: without the wall the car is seen


def test_clutter_is_majority():
    snap = cluttered_street()
    fractions, counts = [], []
    for i in range(8):
        T = radar_pose(float(i * 5), 0.3)
        pts = simulate_radar(snap, T, np.array([8.0, 0, 0]), np.random.default_rng(i), FRONT_RADAR)
        counts.append(len(pts))
        fractions.append(outside_all_boxes(pts, snap, T).mean())
    assert np.mean(fractions) > 0.6
    assert 40 <= np.median(counts) <= 125


def test_deterministic_for_seed():
    snap = cluttered_street()
    T = radar_pose(3.0, 0.3, 0.1)
    v = np.array([5.0, 0.5, 0.0])
    a = simulate_radar(snap, T, v, np.random.default_rng(9))
    b = simulate_radar(snap, T, v, np.random.default_rng(9))
    c = simulate_radar(snap, T, v, np.random.default_rng(10))
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_empty_world_and_no_parts():
    pts = simulate_radar(make_snapshot([]), radar_pose(), np.zeros(3), np.random.default_rng(0), QUIET)
    assert pts.shape == (0, 18)


def _read(path, **filters):
    from nuscenes.utils.data_classes import RadarPointCloud

    return RadarPointCloud.from_file(str(path), **filters).points


def test_pcd_round_trip_through_devkit(tmp_path):
    snap = cluttered_street()
    model = dataclasses.replace(FRONT_RADAR, invalid_fraction=1.0, spurious_rate=30.0)
    pts = simulate_radar(snap, radar_pose(0.0, 0.3), np.array([8.0, 0, 0]), np.random.default_rng(3), model)
    path = tmp_path / "radar.pcd"
    write_radar_pcd(path, pts)
    # Header as the real files.
    head = path.read_bytes()[:400].split(b"DATA binary\n")[0].decode().splitlines()
    assert head[1] == "VERSION 0.7"
    assert head[3] == "SIZE 4 4 4 1 2 4 4 4 4 4 1 1 1 1 1 1 1 1"
    assert head[4] == "TYPE F F F I I F F F F F I I I I I I I I"
    assert head[6] == f"WIDTH {len(pts)}"
    # Everything back, exactly, with the filters off.
    allp = _read(path, invalid_states=list(range(18)), dynprop_states=list(range(8)),
                 ambig_states=list(range(5)))
    np.testing.assert_array_equal(allp.T.astype(np.float32), pts)
    # Default filters keep exactly the valid points (and those are nearly all of a normal sweep).
    valid = ((pts[:, COL["invalid_state"]] == 0) & (pts[:, COL["dyn_prop"]] <= 6)
             & (pts[:, COL["ambig_state"]] == 3))
    assert 0 < (~valid).sum() < len(pts)
    kept = _read(path)
    np.testing.assert_array_equal(kept.T.astype(np.float32), pts[valid])


def test_default_filters_keep_nearly_all(tmp_path):
    pts = simulate_radar(cluttered_street(), radar_pose(0.0, 0.3), np.array([8.0, 0, 0]),
                         np.random.default_rng(4))
    path = tmp_path / "radar.pcd"
    write_radar_pcd(path, pts)
    assert _read(path).shape[1] >= 0.9 * len(pts)


def test_pcd_empty_cloud(tmp_path):
    path = tmp_path / "empty.pcd"
    write_radar_pcd(path, np.zeros((0, 18), dtype=np.float32))
    assert _read(path).shape == (18, 0)
    with pytest.raises(ValueError):
        write_radar_pcd(path, np.zeros((3, 5)))


def test_corner_model_is_wider_and_shorter():
    assert CORNER_RADAR.near_fov_deg > FRONT_RADAR.near_fov_deg
    assert CORNER_RADAR.max_range_m < FRONT_RADAR.max_range_m
    assert isinstance(CORNER_RADAR, RadarModel)


def test_clutter_stops_at_walls():
    """Clutter rays end at their first obstacle: nothing (but ghosts) behind a wall across the
    field of view, and some returns from the wall itself (static-world clutter)."""
    wall = ((20.5, 0.0, 3.0), (1.0, 200.0, 6.0), 0.0, "building", (0, 0, 0), -1)
    model = dataclasses.replace(FRONT_RADAR, spurious_rate=0.0)
    pts = np.concatenate([simulate_radar(make_snapshot([wall]), radar_pose(), np.zeros(3),
                                         np.random.default_rng(s), model) for s in range(5)])
    assert len(pts) >= 5 * 40
    assert np.all(pts[:, 0] < 21.0)  # the wall face is at x = 20 m; 1 m for position noise
    assert np.sum(np.abs(pts[:, 0] - 20.0) < 0.6) >= 20


def test_weak_far_targets_often_missed_strong_near_ones_seen():
    """Swerling-I detection: a car at 12 m is nearly always seen, a pedestrian at 40 m mostly not."""
    T = radar_pose()
    ped = [((40.0, 0.0, 0.9), (0.5, 0.6, 1.75), 0.0, "person", (0, 0, 0), 0)]
    car_hits = ped_hits = 0
    for s in range(30):
        p = simulate_radar(make_snapshot(car(12.0, 0.0)), T, np.zeros(3), np.random.default_rng(s), QUIET)
        car_hits += int(len(p) > 0)
        p = simulate_radar(make_snapshot(ped), T, np.zeros(3), np.random.default_rng(s), QUIET)
        ped_hits += int(len(p) > 0)
    assert car_hits >= 28
    assert ped_hits <= 15


def test_one_cluster_per_resolution_cell():
    """A pedestrian near the radar fits in one or two resolution cells: a return or two, not many."""
    ped = [((8.0, 0.0, 0.9), (0.5, 0.6, 1.75), 0.0, "person", (0, 0, 0), 0)]
    counts = [len(simulate_radar(make_snapshot(ped), radar_pose(), np.zeros(3),
                                 np.random.default_rng(s), QUIET)) for s in range(20)]
    assert max(counts) <= 3 and np.mean(counts) > 0.5
