"""Tests of the synthetic camera renderer (perception/data/synthetic/camera.py).

Scenes are built here from small Parts / GroundMap / Snapshot objects (the shared fixtures in
conftest.py belong to the world generator and are not used). Camera frame: x right, y down,
z forward; ``view_points`` from the nuScenes devkit is the reference projection.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest
from nuscenes.utils.geometry_utils import view_points

from perception.data.synthetic.camera import (
    NEAR, CameraModel, Lighting, instance_pixel_counts, render_camera, write_jpeg,
)
from perception.data.synthetic.geometry import (
    CAMERA_COLOR, MATERIAL, GroundMap, Parts, Snapshot,
)

W, H = 640, 360
K = np.array([[510.0, 0.0, 320.0], [0.0, 510.0, 180.0], [0.0, 0.0, 1.0]])
CLEAN = CameraModel(noise_sigma=0.0, blur_sigma=0.0)


def camera_pose(x: float, y: float, z: float, yaw: float = 0.0) -> np.ndarray:
    """global_T_camera of a level camera at (x, y, z) looking along global yaw."""
    fwd = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    t = np.eye(4)
    t[:3, :3] = np.column_stack([right, down, fwd])
    t[:3, 3] = (x, y, z)
    return t


def make_parts(rows: list[tuple]) -> Parts:
    """rows: (cx, cy, cz, l, w, h, yaw, material name, instance[, rgb])."""
    m = len(rows)
    center = np.array([r[0:3] for r in rows], dtype=np.float64).reshape(m, 3)
    size = np.array([r[3:6] for r in rows], dtype=np.float64).reshape(m, 3)
    yaw = np.array([r[6] for r in rows], dtype=np.float64)
    material = np.array([MATERIAL[r[7]] for r in rows], dtype=np.int64)
    color = np.array([r[9] if len(r) > 9 else CAMERA_COLOR[MATERIAL[r[7]]] for r in rows],
                     dtype=np.uint8).reshape(m, 3)
    instance = np.array([r[8] for r in rows], dtype=np.int64)
    return Parts(center, size, yaw, np.zeros((m, 3)), material, color, instance)


def plain_ground() -> GroundMap:
    ids = np.full((400, 400), MATERIAL["road"], dtype=np.uint8)
    return GroundMap(ids, -100.0, -100.0, 0.5)


def snapshot(rows) -> Snapshot:
    return Snapshot(0, make_parts(rows), plain_ground())


def corners_cam(parts: Parts, t_gc: np.ndarray) -> np.ndarray:
    """(M, 8, 3) corners in the camera frame."""
    inv = np.linalg.inv(t_gc)
    c = parts.corners()
    return c @ inv[:3, :3].T + inv[:3, 3]


# ------------------------------------------------------------------------------------------
# A small street scene, used for the sample render and the speed measurement.
# ------------------------------------------------------------------------------------------
def street_ground() -> GroundMap:
    res = 0.1
    x0, y0 = -60.0, -40.0
    xs = x0 + (np.arange(2400) + 0.5) * res
    ys = y0 + (np.arange(800) + 0.5) * res
    gx, gy = np.meshgrid(xs, ys)
    ids = np.full(gx.shape, MATERIAL["grass"], dtype=np.uint8)
    ids[np.abs(gy) < 10.0] = MATERIAL["sidewalk"]
    ids[np.abs(gy) < 7.0] = MATERIAL["road"]
    dashes = (np.abs(gy) < 0.08) & (np.mod(gx, 9.0) < 3.0)
    edges = np.abs(np.abs(gy) - 6.6) < 0.08
    crossing = (np.abs(gx - 35.0) < 2.0) & (np.mod(gy, 1.0) < 0.5) & (np.abs(gy) < 6.5)
    ids[dashes | edges | crossing] = MATERIAL["lane_marking"]
    return GroundMap(ids, x0, y0, res)


def car_rows(x, y, yaw, inst, rgb) -> list[tuple]:
    c, s = np.cos(yaw), np.sin(yaw)

    def at(lx, ly):
        return x + c * lx - s * ly, y + s * lx + c * ly

    rows = [(*at(0, 0), 0.75, 4.3, 1.75, 0.8, yaw, "vehicle", inst, rgb),
            (*at(-0.3, 0), 1.42, 2.3, 1.55, 0.55, yaw, "glass", inst)]
    for lx in (1.35, -1.35):
        for ly in (0.78, -0.78):
            rows.append((*at(lx, ly), 0.34, 0.66, 0.22, 0.66, yaw, "tire", inst))
    return rows


@functools.lru_cache(maxsize=4)
def street_snapshot(n_cars: int = 8, seed: int = 3) -> Snapshot:
    """A straight street along +x: parked and moving cars, pedestrians, a cone work zone and a
    barrier, buildings, poles and trees (cached: the tests only read it)."""
    g = np.random.default_rng(seed)
    rows: list[tuple] = []
    inst = 0
    palette = [(150, 20, 25), (200, 200, 205), (25, 30, 35), (40, 60, 120), (120, 120, 125),
               (230, 230, 230), (90, 20, 20)]
    # Parked cars on both sides and moving cars in the lanes.
    for i in range(n_cars):
        side = (-1) ** i
        if i % 3 == 2:
            x, y, yaw = 12.0 + 9.0 * i + g.uniform(-2, 2), side * 2.0, 0.0 if side < 0 else np.pi
        else:
            x, y, yaw = 8.0 + 7.0 * i + g.uniform(-1, 1), side * 5.3, 0.0 if side < 0 else np.pi
        rows += car_rows(x, y, yaw + g.uniform(-0.05, 0.05), inst, palette[i % len(palette)])
        inst += 1
    # Pedestrians on the sidewalks.
    for x, y in ((14.0, 8.0), (22.0, -8.5), (30.0, 8.8)):
        shirt = tuple(int(v) for v in g.integers(30, 220, 3))
        rows += [(x, y, 0.45, 0.25, 0.4, 0.88, 0.3, "person", inst, (40, 40, 60)),
                 (x, y, 1.25, 0.28, 0.48, 0.68, 0.3, "person", inst, shirt),
                 (x, y, 1.72, 0.2, 0.2, 0.24, 0.3, "person", inst, (200, 160, 130))]
        inst += 1
    # Traffic cones and a barrier around a work zone in the right lane.
    for j in range(5):
        rows.append((18.0 + 2.0 * j, -3.6, 0.36, 0.36, 0.36, 0.7, 0.0, "traffic_cone", inst))
        inst += 1
    rows.append((29.0, -4.2, 0.5, 2.0, 0.4, 0.95, 0.0, "barrier", inst))
    inst += 1
    # Buildings, poles and trees: static world.
    for side in (-1, 1):
        x = -20.0
        while x < 150.0:
            length = g.uniform(14.0, 30.0)
            height = g.uniform(7.0, 24.0)
            shade = g.uniform(0.7, 1.15)
            rgb = tuple(int(v) for v in np.clip(CAMERA_COLOR[MATERIAL["building"]] * shade, 0, 255))
            rows.append((x + length / 2, side * (12.0 + 4.0), height / 2, length - 1.0, 8.0, height,
                         0.0, "building", -1, rgb))
            x += length
        for x in np.arange(-10.0, 150.0, 18.0):
            rows.append((x, side * 7.6, 3.0, 0.18, 0.18, 6.0, 0.0, "pole", -1))
            rows.append((x + 9.0, side * 8.6, 1.5, 0.3, 0.3, 3.0, 0.0, "pole", -1, (90, 70, 50)))
            rows.append((x + 9.0, side * 8.6, 4.2, 3.0, 3.0, 2.6, 0.4, "vegetation", -1))
    return Snapshot(0, make_parts(rows), street_ground())


# ------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------
def test_box_projects_where_view_points_puts_it():
    t = camera_pose(0.0, 0.0, 1.5)
    snap = snapshot([(12.0, 1.0, 1.0, 2.0, 1.5, 2.0, 0.4, "vehicle", 0)])
    img, ids = render_camera(snap, t, K, W, H, np.random.default_rng(0), Lighting(), CLEAN)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert ids.shape == (H, W) and ids.dtype == np.int32

    cam = corners_cam(snap.parts, t)[0]                        # (8, 3)
    uv = view_points(cam.T, K, normalize=True)[:2]             # (2, 8)
    centre = view_points((np.linalg.inv(t) @ np.r_[snap.parts.center[0], 1.0])[:3, None], K,
                         normalize=True)[:2, 0]
    assert ids[int(round(centre[1])), int(round(centre[0]))] == 0
    ys, xs = np.nonzero(ids == 0)
    assert abs(xs.min() - uv[0].min()) <= 2 and abs(xs.max() - uv[0].max()) <= 2
    assert abs(ys.min() - uv[1].min()) <= 2 and abs(ys.max() - uv[1].max()) <= 2
    # Nothing else is marked as the instance.
    assert set(np.unique(ids).tolist()) == {-1, 0}


def test_occlusion_near_box_hides_far_box():
    t = camera_pose(0.0, 0.0, 1.5)
    far = (30.0, 0.0, 1.0, 2.0, 3.0, 2.0, 0.0, "vehicle", 0)
    near = (10.0, 0.6, 0.8, 1.0, 1.0, 1.6, 0.0, "vehicle", 1)
    # Listed near-first, so a renderer that draws in list order would get it wrong.
    snap = snapshot([near, far])
    img, ids = render_camera(snap, t, K, W, H, np.random.default_rng(0), Lighting(), CLEAN)
    visible, full = instance_pixel_counts(snap, t, K, W, H, ids)
    assert visible[0] < full[0] - 100          # the far box is partly hidden
    assert visible[1] == pytest.approx(full[1], abs=3)

    alone = snapshot([far])
    _, ids_far = render_camera(alone, t, K, W, H, np.random.default_rng(0), Lighting(), CLEAN)
    _, ids_near = render_camera(snapshot([near]), t, K, W, H, np.random.default_rng(0),
                                Lighting(), CLEAN)
    overlap = (ids_far == 0) & (ids_near == 1)
    assert overlap.sum() > 100
    assert np.all(ids[overlap] == 1)           # the near box covers the overlap
    assert abs(int((ids_far == 0).sum()) - int(full[0])) <= 3


def test_long_wall_does_not_cover_car_parked_in_front_of_it():
    # A 60 m building front next to the road and a car parked in front of it, far ahead:
    # sorting by centre distance draws the wall (centre nearer) over the car.
    t = camera_pose(0.0, 0.0, 1.5)
    rows = [(40.0, -5.0, 0.75, 4.3, 1.8, 1.5, 0.0, "vehicle", 0),
            (30.0, -8.0, 5.0, 60.0, 2.0, 10.0, 0.0, "building", -1)]
    snap = snapshot(rows)
    _, ids = render_camera(snap, t, K, W, H, np.random.default_rng(0), Lighting(), CLEAN)
    visible, full = instance_pixel_counts(snap, t, K, W, H, ids)
    assert full[0] > 200
    assert visible[0] == pytest.approx(full[0], abs=3)


def test_full_equals_visible_unoccluded_and_full_ge_visible():
    t = camera_pose(0.0, 0.0, 1.5)
    snap = street_snapshot()
    _, ids = render_camera(snap, t, K, W, H, np.random.default_rng(1), Lighting(), CLEAN)
    visible, full = instance_pixel_counts(snap, t, K, W, H, ids)
    n = int(snap.parts.instance.max()) + 1
    assert visible.shape == (n,) and full.shape == (n,)
    assert np.all(full >= visible)
    assert visible.sum() > 1000
    # A single object alone in view, fully inside the image: nothing can hide it.
    one = snapshot(car_rows(15.0, 2.0, 0.5, 0, (40, 60, 120)))
    _, ids1 = render_camera(one, t, K, W, H, np.random.default_rng(1), Lighting(), CLEAN)
    v1, f1 = instance_pixel_counts(one, t, K, W, H, ids1)
    assert f1[0] > 500 and v1[0] == f1[0]


def test_part_behind_camera_renders_only_front_part():
    # A wall on the right, 3 m away, from 5 m behind to 10 m ahead of the camera.
    t = camera_pose(0.0, 0.0, 1.5)
    snap = snapshot([(2.5, -3.5, 1.5, 15.0, 1.0, 3.0, 0.0, "building", 0)])
    img, ids = render_camera(snap, t, K, W, H, np.random.default_rng(0), Lighting(), CLEAN)
    cam = corners_cam(snap.parts, t)[0]
    assert cam[:, 2].min() < 0 < cam[:, 2].max()
    # Its nearest visible edge is the face at x_cam = 3 (wall face), farthest at z = 10:
    # the leftmost pixel is the far corner on the near face.
    u_left = K[0, 2] + K[0, 0] * 3.0 / 10.0
    ys, xs = np.nonzero(ids == 0)
    assert len(xs) > 1000
    assert abs(xs.min() - u_left) <= 2
    assert xs.max() == W - 1                      # it runs out of the right image edge
    assert np.all(ids[:, : int(u_left) - 2] == -1)  # no flipped copy of the part behind
    visible, full = instance_pixel_counts(snap, t, K, W, H, ids)
    assert visible[0] == pytest.approx(full[0], abs=3)
    # Entirely behind: nothing drawn.
    behind = snapshot([(-10.0, 0.0, 1.0, 2.0, 2.0, 2.0, 0.0, "vehicle", 0)])
    _, ids_b = render_camera(behind, t, K, W, H, np.random.default_rng(0), Lighting(), CLEAN)
    assert np.all(ids_b == -1)
    assert NEAR > 0


def test_camera_inside_a_part_is_handled():
    t = camera_pose(0.0, 0.0, 1.5)
    snap = snapshot([(0.0, 0.0, 1.5, 4.0, 4.0, 3.0, 0.0, "building", 0)])
    _, ids = render_camera(snap, t, K, W, H, np.random.default_rng(0), Lighting(), CLEAN)
    assert np.all(ids == 0)          # every ray leaves through a back face


def test_ground_below_horizon_differs_from_sky():
    t = camera_pose(0.0, 0.0, 1.5)
    for lighting in (Lighting(), Lighting.random(np.random.default_rng(5), "overcast"),
                     Lighting.random(np.random.default_rng(5), "dusk")):
        img, ids = render_camera(snapshot([]), t, K, W, H, np.random.default_rng(0), lighting)
        sky = img[: int(K[1, 2]) - 40].reshape(-1, 3).astype(float).mean(axis=0)
        ground = img[int(K[1, 2]) + 60:].reshape(-1, 3).astype(float).mean(axis=0)
        assert np.abs(sky - ground).max() > 30, lighting.kind
        assert np.all(ids == -1)


def test_ground_materials_visible():
    # Left half of the view is road, right half grass: both colours appear.
    ids = np.full((100, 100), MATERIAL["road"], dtype=np.uint8)
    ids[:50] = MATERIAL["grass"]      # y < 0: right of a camera looking along +x
    snap = Snapshot(0, make_parts([]), GroundMap(ids, 0.0, -50.0, 1.0))
    img, _ = render_camera(snap, camera_pose(5.0, 0.0, 1.5), K, W, H, np.random.default_rng(0),
                           Lighting(), CLEAN)
    row = img[H - 20].astype(int)
    left, right = row[: W // 3].mean(axis=0), row[-W // 3:].mean(axis=0)
    assert right[1] > right[0] + 15                # grass is green
    assert abs(left[1] - left[0]) < 15             # road is grey


def test_deterministic_for_a_seed():
    t = camera_pose(0.0, 0.0, 1.5)
    snap = street_snapshot()
    lighting = Lighting.random(np.random.default_rng(7))
    a = render_camera(snap, t, K, W, H, np.random.default_rng(11), lighting)
    b = render_camera(snap, t, K, W, H, np.random.default_rng(11), lighting)
    c = render_camera(snap, t, K, W, H, np.random.default_rng(12), lighting)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])          # the noise differs
    assert np.array_equal(a[1], c[1])
    # Sweeps skip the instance buffer; the image is the same either way.
    d = render_camera(snap, t, K, W, H, np.random.default_rng(11), lighting, instance_ids=False)
    assert np.array_equal(a[0], d[0]) and d[1] is None and (a[1] >= 0).any()
    assert Lighting.random(np.random.default_rng(3)) == Lighting.random(np.random.default_rng(3))


def test_lighting_random_kinds():
    g = np.random.default_rng(0)
    kinds = {Lighting.random(g).kind for _ in range(60)}
    assert kinds == {"day", "overcast", "dusk"}
    hash(Lighting())                               # frozen, usable as a cache key


def test_write_jpeg_roundtrip(tmp_path: Path):
    t = camera_pose(0.0, 0.0, 1.5)
    img, _ = render_camera(street_snapshot(), t, K, W, H, np.random.default_rng(0), Lighting())
    path = tmp_path / "cam.jpg"
    write_jpeg(path, img, CameraModel().jpeg_quality)
    back = cv2.imread(str(path))
    assert back is not None and back.shape == (H, W, 3)
    # RGB -> BGR on write: the decoded image matches the render up to JPEG loss.
    diff = np.abs(back[..., ::-1].astype(int) - img.astype(int)).mean()
    assert diff < 6


def test_other_camera_headings_and_sample(tmp_path: Path):
    snap = street_snapshot()
    lighting = Lighting(kind="day", sun_azimuth=-0.5, sun_elevation=0.8)
    views = []
    for yaw in (0.0, np.pi / 2, np.pi, -0.9):
        img, ids = render_camera(snap, camera_pose(-2.0, 1.5, 1.6, yaw), K, W, H,
                                 np.random.default_rng(0), lighting)
        views.append(img)
        visible, full = instance_pixel_counts(snap, camera_pose(-2.0, 1.5, 1.6, yaw), K, W, H, ids)
        assert np.all(full >= visible)
    img, _ = render_camera(snap, camera_pose(-2.0, 1.5, 1.6), K, W, H, np.random.default_rng(0),
                           Lighting.random(np.random.default_rng(1), "overcast"))
    sample = np.vstack([np.hstack(views[:2]), np.hstack([views[0], img])])
    cv2.imwrite("/tmp/camera_sample.png", cv2.cvtColor(views[0], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "grid.png"), cv2.cvtColor(sample, cv2.COLOR_RGB2BGR))


def test_street_scene_renders_from_every_rig_direction(tmp_path: Path):
    """Render + JPEG of a ~300-part street scene from the six directions of a nuScenes rig:
    every view facing down the street shows some of its cars, every view writes a readable
    JPEG. (Speed is measured in docs/data.md, not asserted here.)"""
    snap = street_snapshot(n_cars=36)
    assert len(snap.parts) >= 280
    lighting = Lighting()
    g = np.random.default_rng(0)
    path = tmp_path / "x.jpg"
    for i, yaw in enumerate((0.0, 0.96, -0.96, np.pi, 2.2, -2.2)):
        t = camera_pose(-2.0 + i, 1.5, 1.6, yaw)
        img, ids = render_camera(snap, t, K, W, H, g, lighting)
        assert img.shape == (H, W, 3) and img.std() > 5.0, yaw
        if np.cos(yaw) > 0:                        # the street lies along +x
            assert (ids >= 0).sum() > 100, yaw
        write_jpeg(path, img, 90)
        back = cv2.imread(str(path))
        assert back is not None and back.shape == (H, W, 3)


def test_ground_texture_window_is_reused_near_a_raster_edge():
    # A raster larger than the texture window along one axis: the window is clipped at the edge,
    # and a camera moving a few metres there must keep hitting the cache (it once re-textured the
    # whole ground for every image, ~4 s each).
    from perception.data.synthetic import camera as cam_mod
    from perception.data.synthetic.geometry import MATERIAL, GroundMap

    ids = np.full((1000, cam_mod._GROUND_WINDOW + 77), MATERIAL["road"], dtype=np.uint8)
    ground = GroundMap(ids, 100.0, 100.0, 0.1)
    light = Lighting.random(np.random.default_rng(0))
    x_near_edge = 100.0 + 0.1 * (ids.shape[1] - 900)  # > 1024 cells from the window centre
    tex, r0, c0 = cam_mod._ground_texture(ground, np.array([x_near_edge, 150.0]), light)
    assert c0 == ids.shape[1] - cam_mod._GROUND_WINDOW  # clipped at the edge
    for dx in (0.5, 3.0, 10.0):
        again = cam_mod._ground_texture(ground, np.array([x_near_edge + dx, 150.0]), light)
        assert again[0] is tex
    # Far from the window the texture is rebuilt for the new place.
    far = cam_mod._ground_texture(ground, np.array([100.0 + 50.0, 150.0]), light)
    assert far[0] is not tex and far[2] == 0


def test_ground_texture_windows_are_kept_when_a_drive_crosses_between_them():
    # The writer renders one channel after the other, each over the whole drive: a drive that
    # crosses from one texture window into the next comes back to the first window for the
    # next channel, which must not re-texture it (~2.7 s per window for a default scene).
    from perception.data.synthetic import camera as cam_mod
    from perception.data.synthetic.geometry import MATERIAL, GroundMap

    ids = np.full((1000, cam_mod._GROUND_WINDOW + 2100), MATERIAL["road"], dtype=np.uint8)
    ground = GroundMap(ids, 0.0, 0.0, 0.1)
    light = Lighting.random(np.random.default_rng(1))
    start, end = np.array([50.0, 50.0]), np.array([550.0, 50.0])   # columns 500 and 5500
    tex_a, _, c0_a = cam_mod._ground_texture(ground, start, light)
    tex_b, _, c0_b = cam_mod._ground_texture(ground, end, light)
    assert c0_a == 0 and c0_b == ids.shape[1] - cam_mod._GROUND_WINDOW and tex_b is not tex_a
    for _ in range(2):                                   # next channels: start, then end again
        assert cam_mod._ground_texture(ground, start, light)[0] is tex_a
        assert cam_mod._ground_texture(ground, end, light)[0] is tex_b
