"""Augmentation keeps every sensor consistent with the boxes and with the others.

Geometry is checked on the real scene-0916 (``../shared/data`` or ``$PERCEPTION_SHARED_DATA``;
skipped where absent) and on hand-made frames.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perception.data.augment import (
    AugmentedDataset,
    FrameAugmenter,
    GTDatabase,
    GTPaste,
    augment_image,
    bev_matrix,
    bev_overlap,
    transform_frame,
)
from perception.data.sampler import TrainSampler, cbgs_indices
from perception.models.camera.lift import frustum_points
from perception.models.camera.transforms import resize_images
from perception.models.config import AugmentConfig
from perception.structures import Boxes3D, collate

from real_scene import DATAROOT, VERSION, require_scene


@pytest.fixture(scope="module")
def scene():
    require_scene()
    from perception.data import NuScenesDataset

    return NuScenesDataset(DATAROOT, "v1.0-mini", "mini_val", sweeps=1, radar_sweeps=1)


@pytest.fixture(scope="module")
def frame(scene):
    return scene[10]


CASES = [  # rotation, scale, flip_x, flip_y, translation
    (0.3, 1.05, False, False, (0.0, 0.0, 0.0)),
    (-0.7, 0.93, True, False, (1.0, -2.0, 0.3)),
    (2.0, 1.0, False, True, (0.0, 0.0, 0.0)),
    (0.1, 1.1, True, True, (0.5, 0.5, 0.0)),
]


@pytest.mark.parametrize("case", CASES)
def test_global_transform_keeps_points_in_their_boxes(frame, case):
    M = bev_matrix(*case)
    out = transform_frame(frame, M)
    before = frame.gt.boxes.points_in_boxes(frame.lidar.points).sum(1)
    after = out.gt.boxes.points_in_boxes(out.lidar.points).sum(1)
    assert before.sum() > 500
    # Points on a box face may cross it by rounding; nothing else may move in or out.
    assert (before - after).abs().max() <= 2
    # Sizes scale, yaw follows the mirrored heading, velocity is a vector like the positions.
    s = case[1]
    torch.testing.assert_close(out.gt.boxes.dims, frame.gt.boxes.dims * s)
    v = frame.gt.boxes.velocity.double()
    ok = torch.isfinite(v).all(1)
    torch.testing.assert_close(out.gt.boxes.velocity.double()[ok], v[ok] @ M[:2, :2].T,
                               rtol=1e-5, atol=1e-5)
    heading = torch.stack([torch.cos(frame.gt.boxes.yaw), torch.sin(frame.gt.boxes.yaw)], 1).double()
    mapped = heading @ M[:2, :2].T / s
    new = torch.stack([torch.cos(out.gt.boxes.yaw), torch.sin(out.gt.boxes.yaw)], 1).double()
    torch.testing.assert_close(new, mapped, rtol=1e-5, atol=1e-5)
    # Radar velocities turn with the scene (planar linear map).
    r0, r1 = frame.radars["RADAR_FRONT"], out.radars["RADAR_FRONT"]
    i, j = r0.fields.index("vx_comp"), r0.fields.index("vy_comp")
    torch.testing.assert_close(r1.points[:, [i, j]].double(),
                               r0.points[:, [i, j]].double() @ M[:2, :2].T, rtol=1e-5, atol=1e-4)
    # The world did not move: ego -> global maps an augmented point where the original went.
    p0 = torch.cat([frame.lidar.points[:5, :3].double(), torch.ones(5, 1, dtype=torch.float64)], 1)
    p1 = torch.cat([out.lidar.points[:5, :3].double(), torch.ones(5, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(p1 @ out.global_T_ego.T, p0 @ frame.global_T_ego.T, rtol=0, atol=1e-3)


@pytest.mark.parametrize("case", CASES)
def test_cameras_see_augmented_boxes_where_the_image_shows_them(frame, case):
    out = transform_frame(frame, bev_matrix(*case))
    centres0, centres1 = frame.gt.boxes.center, out.gt.boxes.center
    for ch in ("CAM_FRONT", "CAM_BACK_LEFT"):
        uv0, d0 = frame.cameras[ch].calib.project(centres0)
        uv1, d1 = out.cameras[ch].calib.project(centres1)
        front = d0 > 1
        assert front.sum() > 0
        # Box centres are float32: agreement to float32 precision of the pixel coordinates.
        torch.testing.assert_close(uv1[front], uv0[front], rtol=1e-5, atol=1e-3)
        # Depth along the ray stays the recorded one (what the image shows); the world's scale
        # lives in ego_T_camera, so a depth bin d lands at s * d in the augmented ego frame.
        torch.testing.assert_close(d1[front], d0[front], rtol=1e-5, atol=1e-3)
    # And the lift's frustum lands on the augmented geometry: frustum_aug = M @ frustum.
    b0, b1 = collate([frame]), collate([out])
    kw = dict(feature_shape=(4, 6), stride=150, depths=torch.tensor([5.0, 20.0]))
    f0 = frustum_points(intrinsics=b0.intrinsics, ego_T_camera=b0.ego_T_camera,
                        img_aug=b0.img_aug, camera_mask=b0.camera_mask, **kw).double()
    f1 = frustum_points(intrinsics=b1.intrinsics, ego_T_camera=b1.ego_T_camera,
                        img_aug=b1.img_aug, camera_mask=b1.camera_mask, **kw).double()
    M = bev_matrix(*case)
    torch.testing.assert_close(f1, f0 @ M[:3, :3].T + M[:3, 3], rtol=0, atol=1e-3)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(scale=1.1, anchor_x=0.2, anchor_y=0.9),
    dict(scale=0.9, anchor_x=0.7, anchor_y=0.5, flip=True),
    dict(scale=1.05, flip=True, rotation=0.08),
])
def test_image_augmentation_moves_pixels_as_img_aug_says(kw):
    h, w, size = 90, 160, (32, 64)
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    spots = [(30, 50), (60, 110), (45, 80)]             # (row, col) of bright 3x3 patches
    for r, c in spots:
        img[:, r - 1:r + 2, c - 1:c + 2] = 255
    out, A = augment_image(img, torch.eye(3, dtype=torch.float64), size, **kw)
    assert out.shape == (3, *size) and out.dtype == torch.uint8
    for r, c in spots:
        u, v, _ = (A @ torch.tensor([c + 0.5, r + 0.5, 1.0], dtype=torch.float64)).tolist()
        if not (1 <= u < size[1] - 1 and 1 <= v < size[0] - 1):
            continue
        # The spot is the brightest thing near its predicted place (allow a pixel of blur).
        col, row = int(u), int(v)
        patch = out[0, row - 1:row + 2, col - 1:col + 2].float()
        assert patch.max() > 40, (kw, (r, c), (u, v))


def test_fixed_image_view_matches_the_models_resize(frame):
    b = collate([frame])
    ref = resize_images(b, (128, 352))
    ds = AugmentedDataset([frame], None, image_size=(128, 352))
    got = collate([ds[0]])
    torch.testing.assert_close(got.img_aug.double(), ref.img_aug.double(), rtol=0, atol=1e-6)
    diff = (got.images.float() - ref.images.float()).abs()
    assert diff.mean() < 3.0    # OpenCV area resize vs torch antialiased bilinear


def test_bev_overlap_cases():
    a = Boxes3D([[0, 0, 0, 4, 2, 1.5, 0, 0, 0]])
    b = Boxes3D([
        [0, 0, 0, 4, 2, 1.5, 1.0, 0, 0],        # same centre: overlaps
        [4.1, 0, 0, 4, 2, 1.5, 0, 0, 0],        # just clear along x
        [3.9, 0, 0, 4, 2, 1.5, 0, 0, 0],        # just touching along x
        [3.5, 2.7, 0, 4, 2, 1.5, math.pi / 4, 0, 0],   # rotated, edge passes by the corner
        [2.5, 1.5, 0, 4, 2, 1.5, math.pi / 4, 0, 0],   # rotated, overlapping a corner
    ])
    assert bev_overlap(a, b)[0].tolist() == [True, False, True, False, True]
    # Against dense sampling on random pairs.
    g = torch.Generator().manual_seed(0)
    n = 60
    t = torch.zeros(n, 9)
    t[:, :2] = torch.rand(n, 2, generator=g) * 10
    t[:, 3:5] = 0.5 + torch.rand(n, 2, generator=g) * 4
    t[:, 5] = 1
    t[:, 6] = torch.rand(n, generator=g) * 6.3
    boxes = Boxes3D(t)
    ov = bev_overlap(boxes, boxes)
    xs = torch.linspace(-3, 13, 321)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    pts = torch.cat([grid, torch.zeros(len(grid), 1)], 1)
    inside = boxes.points_in_boxes(pts).float()
    shared = (inside @ inside.T) > 0
    # Sampling can only miss thin overlaps, never invent one.
    assert not (shared & ~ov).any()
    assert (ov & ~shared).sum() <= 0.02 * n * n


@pytest.fixture(scope="module")
def database(scene):
    frames = (scene[i] for i in range(0, len(scene), 4))
    return GTDatabase.build(frames, min_lidar_points=5, radar_margin=0.5)


def test_database_entries_hold_their_points(database, tmp_path):
    assert len(database) > 50
    for e in range(0, len(database), 7):
        pts = database.lidar_points[database.lidar_ptr[e]:database.lidar_ptr[e + 1]]
        assert len(pts) == database.num_lidar_pts[e] >= 5
        assert Boxes3D(database.boxes[e:e + 1]).points_in_boxes(pts, pts[:, 4]).all()
    again = GTDatabase.load(database.save(tmp_path / "db.pt"))
    assert torch.equal(again.lidar_points, database.lidar_points) and again.source == database.source


def test_paste_fills_classes_without_collisions(scene, database):
    from perception.structures.labels import DETECTION_CLASSES as C

    frame = scene[21]
    counts = {"car": 12, "bicycle": 20, "pedestrian": 30}
    paste = GTPaste(database, counts)
    out = paste(frame, np.random.default_rng(0))
    n0 = len(frame.gt)
    new = out.gt[n0:]
    assert len(new) > 0
    assert all(C[int(c)] in counts for c in new.labels)
    for name, target in counts.items():
        assert int((out.gt.labels == C.index(name)).sum()) <= max(target, int((frame.gt.labels == C.index(name)).sum()))
    ov = bev_overlap(out.gt.boxes, out.gt.boxes)
    ov.fill_diagonal_(False)
    assert not ov[n0:].any(), "a pasted box overlaps another box"
    # Every pasted box holds exactly its database points; the frame's own points there are gone.
    inside = new.boxes.points_in_boxes(out.lidar.points).sum(1)
    assert torch.equal(inside, new.num_lidar_pts)
    # Untouched original boxes keep their points.
    old_in = frame.gt.boxes.points_in_boxes(frame.lidar.points).sum(1)
    assert torch.equal(out.gt[:n0].boxes.points_in_boxes(out.lidar.points).sum(1), old_in)
    # The pasted rows are the trailing ones and are counted (depth supervision skips them).
    k = out.lidar.num_pasted
    assert frame.lidar.num_pasted == 0 and k == int(new.num_lidar_pts.sum()) > 0
    assert new.boxes.points_in_boxes(out.lidar.points[-k:]).any(0).all()
    assert not new.boxes.points_in_boxes(out.lidar.points[:-k]).any()
    assert collate([out, frame]).lidar_num_pasted.tolist() == [k, 0]


def test_augmenter_is_a_function_of_the_seed(scene, database):
    cfg = AugmentConfig()
    aug = FrameAugmenter(cfg, (32, 64), GTPaste(database, {"car": 10}))
    ds = AugmentedDataset(scene, aug)
    a, b, c = ds[(3, 11)], ds[(3, 11)], ds[(3, 12)]
    assert torch.equal(a.lidar.points, b.lidar.points) and torch.equal(a.gt.boxes.tensor, b.gt.boxes.tensor)
    assert not torch.equal(a.gt.boxes.tensor[:5], c.gt.boxes.tensor[:5])   # another seed, another draw
    assert a.cameras["CAM_FRONT"].data.shape == (3, 32, 64)
    assert torch.equal(a.cameras["CAM_FRONT"].data, b.cameras["CAM_FRONT"].data)


def test_flip_with_bev_keeps_every_camera_view_unmirrored(scene):
    """``image.flip_with_bev``: every camera view is what a rigid camera sees (the handedness of
    ego_T_camera times that of img_aug is +1: a mirrored scene has its images flipped, the
    others none), while independent flips leave half the views mirrored. The other draws are
    the same either way: LiDAR, boxes and each image's crop and scale agree."""
    from dataclasses import replace as dc_replace

    from perception.models.config import ImageAugmentConfig

    base = AugmentConfig()
    tied = dc_replace(base, image=dc_replace(base.image, flip_with_bev=True))
    assert isinstance(tied.image, ImageAugmentConfig) and not base.image.flip_with_bev
    plain_ds = AugmentedDataset(scene, FrameAugmenter(base, (32, 64)))
    tied_ds = AugmentedDataset(scene, FrameAugmenter(tied, (32, 64)))

    def handedness(frame):
        return [float(torch.sign(torch.linalg.det(c.calib.ego_T_sensor[:3, :3])
                                 * torch.linalg.det(c.calib.img_aug[:2, :2])))
                for c in frame.cameras.values()]

    plain_signs, mirrored_frames = [], 0
    for seed in range(12):
        a, b = plain_ds[(7, seed)], tied_ds[(7, seed)]
        assert torch.equal(a.lidar.points, b.lidar.points)
        assert torch.equal(a.gt.boxes.tensor, b.gt.boxes.tensor)
        assert handedness(b) == [1.0] * len(b.cameras)
        plain_signs += handedness(a)
        mirrored = bool(torch.linalg.det(b.cameras["CAM_FRONT"].calib.ego_T_sensor[:3, :3]) < 0)
        mirrored_frames += mirrored
        for ch in a.cameras:
            ia, ib = a.cameras[ch].calib.img_aug, b.cameras[ch].calib.img_aug
            # Same scale and crop: the matrices agree up to the flip's sign on x.
            torch.testing.assert_close(ia[:2, :2].abs(), ib[:2, :2].abs())
    assert 0 < mirrored_frames < 12
    assert 1.0 in plain_signs and -1.0 in plain_signs


def test_paste_fades_out_from_its_stream_position(scene, database):
    """``paste_until``: keys at earlier positions get pasted objects, later ones none; the same
    seed gives the same frame either side of the switch when nothing is pasted."""
    cfg = AugmentConfig()
    counts = {"car": 12, "bicycle": 20, "pedestrian": 30}
    aug = FrameAugmenter(cfg, (32, 64), GTPaste(database, counts), paste_until=100)
    ds = AugmentedDataset(scene, aug)
    real = len(scene[21].gt)
    before, after, unplaced = ds[(21, 11, 99)], ds[(21, 11, 100)], ds[(21, 11)]
    assert len(before.gt) > real and before.lidar.num_pasted > 0
    assert len(after.gt) == real and after.lidar.num_pasted == 0
    assert torch.equal(unplaced.gt.boxes.tensor, before.gt.boxes.tensor)  # no position: before
    plain = AugmentedDataset(scene, FrameAugmenter(cfg, (32, 64), None))[(21, 11, 5)]
    assert torch.equal(after.lidar.points, plain.lidar.points)


def test_paste_fade_reaches_the_training_dataset(tmp_path, scene, database):
    from perception.config import load_config
    from perception.engine.train import build_train_dataset
    from perception.models import ExperimentConfig

    database.save(tmp_path / "gt_database.pt")
    cfg = load_config(None, ExperimentConfig, [
        f"data.root={DATAROOT}", f"data.version={VERSION}", "data.train_split=mini_val",
        "model.modalities=[lidar]", "data.augment.paste.counts={car: 3}",
        "data.augment.paste.fade=0.25", "train.max_iters=40", "train.batch_size=2"])
    ds, _ = build_train_dataset(cfg, tmp_path, verbose=False)
    assert ds.augmenter.paste is not None and ds.augmenter.paste_until == 60   # 30 iterations x 2
    with pytest.raises(ValueError, match="paste.fade"):
        load_config(None, ExperimentConfig, ["data.augment.paste.fade=1.0"])


def test_sampler_resumes_anywhere_and_cbgs_balances():
    s = TrainSampler(7, seed=5)
    stream = s.keys(0, 30)
    assert sorted(i for i, _, _ in stream[:7]) == list(range(7))     # an epoch is a permutation
    assert [p for _, _, p in stream] == list(range(30))              # keys carry their position
    assert stream[7:14] != stream[:7]
    for start in (0, 3, 7, 13):
        assert list(zip(range(10), TrainSampler(7, seed=5, start=start)))[-1][1] == stream[start + 9]
    classes = [np.array([0])] * 40 + [np.array([0, 3])] * 2 + [np.array([5])]
    idx = cbgs_indices(classes, np.random.default_rng(0))
    labels = np.concatenate([classes[i] for i in idx])
    counts = np.bincount(labels, minlength=6)
    assert counts[3] >= len(idx) // 3 and counts[5] >= len(idx) // 3
    cb = TrainSampler(len(classes), seed=1, classes_per_frame=classes)
    assert cb.epoch_length == len(idx)
