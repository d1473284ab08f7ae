"""Camera features painted onto the LiDAR points (perception/models/camera/paint.py)."""
import math
from dataclasses import replace

import pytest
import torch

from perception.models import build_model
from perception.models.camera import depth_bin_centers, frustum_points
from perception.models.camera.paint import IGNORE, PointPainter, paint_points
from perception.models.config import CameraConfig
from perception.structures.grid import BEVGrid

GRID = BEVGrid(x_range=(-51.2, 51.2), y_range=(-51.2, 51.2), z_range=(-5.0, 3.0),
               cell_size=0.8, voxel_z=8.0)


def _paint(feats, points, *, K, T, aug, mask, pasted=None, lag_col=4, tolerance=1.0):
    pasted = torch.zeros(len(points), dtype=torch.int64) if pasted is None else pasted
    return paint_points(feats, points, pasted, time_lag_col=lag_col, intrinsics=K,
                        ego_T_camera=T, img_aug=aug, camera_mask=mask, stride=8, grid=GRID,
                        depth_tolerance=tolerance)


def _pixel_ids(n_cams, h=16, w=44):
    """(1, N, 2, h, w) features naming their pixel: channel 0 the camera, 1 the pixel index."""
    cam = torch.arange(n_cams, dtype=torch.float32)[:, None, None].expand(n_cams, h, w)
    pix = torch.arange(h * w, dtype=torch.float32).reshape(h, w).expand(n_cams, h, w)
    return torch.stack([cam, pix], dim=1)[None]


def test_each_point_takes_the_feature_of_the_pixel_the_lift_puts_it_at(kit):
    """A point placed on the lift's own frustum (feature pixel (i, j), some depth) takes
    exactly that pixel's feature, in the BEV cell of the point: painting and lift share one
    geometry, through image resize, crop and mirror and a global BEV augmentation."""
    K, T, aug = kit.augmented_rig()
    depths = depth_bin_centers((1.0, 52.0, 1.0))
    pts = frustum_points(intrinsics=K, ego_T_camera=T, img_aug=aug,
                         camera_mask=torch.ones(1, 3, dtype=torch.bool), feature_shape=(16, 44),
                         stride=8, depths=depths)[0]                           # (3, D, 16, 44, 3)
    feats = _pixel_ids(3)
    gen = torch.Generator().manual_seed(0)
    for cam in (0, 1):
        for _ in range(20):
            i, j = int(torch.randint(16, (1,), generator=gen)), int(torch.randint(44, (1,),
                                                                              generator=gen))
            d = int(torch.randint(4, 40, (1,), generator=gen))
            p = pts[cam, d, i, j]
            if not bool(GRID.in_range(p[None])[0]):
                continue
            cloud = torch.cat([p, torch.zeros(2)])[None]
            mask = torch.zeros(1, 3, dtype=torch.bool)
            mask[0, cam] = True
            out = _paint(feats, [cloud], K=K, T=T, aug=aug, mask=mask)
            row, col = GRID.xy_to_cell(p[None])[0].tolist()
            assert out[0, 2].sum() == 1 and out[0, 2, row, col] == 1, "one cell covered"
            assert out[0, 0, row, col] == cam and out[0, 1, row, col] == i * 44 + j


def test_only_the_surface_the_camera_sees_is_painted(kit):
    """Of points on one pixel's ray, those within the tolerance of the nearest are painted, the
    rest (behind the surface) not; nor are pasted points, older sweeps' points, cameras outside
    the mask or points behind the camera; a cell's feature is the mean of its points'."""
    K, T = kit.camera_rig(1, (128, 352))
    K, T, aug = K[None], T[None], torch.eye(3)[None, None]
    fwd, centre = T[0, 0, :3, 2], T[0, 0, :3, 3]
    feats = torch.zeros(1, 1, 1, 16, 44)
    feats[0, 0, 0] = torch.arange(16 * 44, dtype=torch.float32).reshape(16, 44)

    def at(depth, lag=0.0):  # a point on the optical axis: x y z intensity lag
        return torch.cat([centre + depth * fwd, torch.tensor([0.0, lag])])[None]

    def cell(depth):
        return tuple(GRID.xy_to_cell((centre + depth * fwd)[None])[0].tolist())

    axis_pixel = (64 // 8) * 44 + 176 // 8
    one = torch.ones(1, 1, dtype=torch.bool)
    near, behind, close_behind = at(10.0), at(20.0), at(10.5)
    out = _paint(feats, [torch.cat([near, behind, close_behind])], K=K, T=T, aug=aug, mask=one)
    assert out[0, 1][cell(10.0)] == 1 and out[0, 1][cell(20.0)] == 0
    assert out[0, 0][cell(10.0)] == axis_pixel
    assert out[0, 1].sum() == 1 + (cell(10.5) != cell(10.0))
    assert _paint(feats, [torch.cat([near, behind])], K=K, T=T, aug=aug, mask=one,
                  tolerance=20.0)[0, 1][cell(20.0)] == 1, "a larger tolerance paints it"
    # Pasted rows (trailing), older sweeps, absent cameras, points behind the camera.
    skipped = [
        _paint(feats, [torch.cat([behind, near])], K=K, T=T, aug=aug, mask=one,
               pasted=torch.tensor([1])),
        _paint(feats, [at(10.0, lag=0.05)], K=K, T=T, aug=aug, mask=one),
        _paint(feats, [near], K=K, T=T, aug=aug, mask=torch.zeros(1, 1, dtype=torch.bool)),
        _paint(feats, [at(-10.0)], K=K, T=T, aug=aug, mask=one),
    ]
    assert skipped[0][0, 1].sum() == 1 and skipped[0][0, 1][cell(20.0)] == 1
    for out in skipped[1:]:
        assert out.abs().sum() == 0
    # Two points of different pixels in one cell: the mean of their features.
    side = T[0, 0, :3, 0]
    a = torch.cat([centre + 10.0 * fwd, torch.zeros(2)])[None]
    pa = _paint(feats, [a], K=K, T=T, aug=aug, mask=one)[0, 0][cell(10.0)]
    for shift in torch.linspace(-0.8, 0.8, 33):     # a point of the same cell, another pixel
        b = torch.cat([centre + 10.0 * fwd + shift * side, torch.zeros(2)])[None]
        if tuple(GRID.xy_to_cell(b)[0].tolist()) != cell(10.0):
            continue
        pb = _paint(feats, [b], K=K, T=T, aug=aug, mask=one)[0, 0][cell(10.0)]
        if pb != pa:
            break
    assert pb != pa
    both = _paint(feats, [torch.cat([a, b])], K=K, T=T, aug=aug, mask=one)[0, 0][cell(10.0)]
    assert torch.isclose(both, (pa + pb) / 2)


def test_the_painter_adds_nothing_at_first_nor_where_nothing_was_painted(kit):
    K, T = kit.camera_rig(1, (128, 352))
    K, T, aug = K[None], T[None], torch.eye(3)[None, None]
    fwd, centre = T[0, 0, :3, 2], T[0, 0, :3, 3]
    cloud = torch.cat([centre + 12.0 * fwd, torch.zeros(2)])[None]
    painter = PointPainter(grid=GRID, in_channels=4, hidden_channels=8, out_channels=6, stride=8)
    feats = torch.randn(1, 1, 4, 16, 44)
    args = dict(time_lag_col=4, intrinsics=K, ego_T_camera=T, img_aug=aug,
                camera_mask=torch.ones(1, 1, dtype=torch.bool))
    out, logits = painter(feats, [cloud], torch.zeros(1, dtype=torch.int64), **args)
    assert logits is None
    assert out.shape == (1, 6, *GRID.shape) and out.abs().sum() == 0
    torch.manual_seed(0)
    torch.nn.init.normal_(painter.out.weight)
    out, _ = painter(feats, [cloud], torch.zeros(1, dtype=torch.int64), **args)
    row, col = GRID.xy_to_cell((centre + 12.0 * fwd)[None])[0].tolist()
    touched = out.abs().sum(1)[0] > 0
    assert touched[row, col]
    assert touched.sum() <= 9 and not touched[:row - 1].any() and not touched[row + 2:].any()


def _paint_config(kit, modalities=("camera", "lidar", "radar"), **fusion):
    cfg = kit.tiny_config(modalities)
    return replace(cfg, camera=replace(cfg.camera, paint_channels=8),
                   fusion=replace(cfg.fusion, **fusion))


def _keyframe_batch(kit, **kw):
    batch = kit.make_batch(grid=kit.grid, **kw)
    for p in batch.lidar_points:
        p[:, 4] = 0.0          # every point in the keyframe sweep (the time lag column)
    return batch


def test_the_detector_paints_frames_with_cameras_and_lidar_only(kit):
    """With a trained painter, frames using both sensors get a LiDAR map with paint; without
    the cameras (requested or dropped) the LiDAR map is the LiDAR encoder's own; a subset pass
    without cameras fuses the unpainted map, exactly as a forward without cameras."""
    torch.manual_seed(0)
    model = build_model(_paint_config(kit, subset_loss=(("lidar", "radar"),)))
    assert model.painter is not None
    torch.nn.init.normal_(model.painter.out.weight)
    model.eval()
    batch = _keyframe_batch(kit, batch_size=2)
    present = model.select(batch)
    bevs = model.encode(batch, present)
    lidar = bevs["lidar"]
    assert lidar.unpainted is not None
    assert (lidar.features - lidar.unpainted).abs().sum() > 0
    no_cams = model.encode(batch, model.select(batch, ("lidar", "radar")))["lidar"]
    assert no_cams.unpainted is None and torch.equal(no_cams.features, lidar.unpainted)
    (sub,) = model._subsets(bevs, present)
    alone = model(batch, modalities=("lidar", "radar")).heads
    for a, b in zip(sub.heads, alone):
        assert torch.allclose(a.heatmap, b.heatmap, atol=1e-5)
    # One frame with its cameras dropped: only the other frame is painted.
    drop = present.clone()
    drop[0, model.modalities.index("camera")] = False
    mixed = model.encode(batch, drop)["lidar"]
    assert torch.equal(mixed.features[0], mixed.unpainted[0])
    assert (mixed.features[1] - mixed.unpainted[1]).abs().sum() > 0


def test_painting_trains_the_camera_network(kit):
    """The painter's map reaches the loss: at first only its zero-initialised last layer gets
    a gradient; once that layer is not zero, its first layer and the camera CNN's gradient
    changes (the CNN now learns from the features at the LiDAR points too)."""
    torch.manual_seed(0)
    model = build_model(_paint_config(kit))
    model.train()
    batch = _keyframe_batch(kit, batch_size=1)
    loss = sum(model.loss(model(batch), batch).values())
    loss.backward()
    stem = next(model.encoders["camera"].backbone.parameters())
    assert model.painter.out.weight.grad.abs().sum() > 0
    assert model.painter.net[0].weight.grad.abs().sum() == 0, "zero-initialised last layer"
    lift_only = stem.grad.clone()
    torch.nn.init.normal_(model.painter.out.weight)
    model.zero_grad()
    torch.manual_seed(0)
    loss = sum(model.loss(model(batch), batch).values())
    loss.backward()
    assert model.painter.net[0].weight.grad.abs().sum() > 0
    assert not torch.allclose(stem.grad, lift_only)


def test_paint_config(kit):
    with pytest.raises(ValueError, match="paint_channels"):
        CameraConfig(paint_channels=-1)
    assert build_model(_paint_config(kit, modalities=("camera", "radar"))).painter is None
    assert build_model(kit.tiny_config()).painter is None


def _box_scene(kit, yaw):
    """The ``augmented_rig`` cameras and, per camera, a 4 x 2 x 1.6 m box 12 m along its optical
    axis (class 3) with 400 LiDAR points filling it, in the augmented frame."""
    from perception.structures import Boxes3D, GroundTruth

    K, T, aug = kit.augmented_rig()
    out = []
    for cam in range(3):
        centre = T[0, cam, :3, 3] + 12.0 * T[0, cam, :3, 2]
        box = torch.tensor([[centre[0], centre[1], centre[2], 4.0, 2.0, 1.6, yaw, 0.0, 0.0]])
        gen = torch.Generator().manual_seed(cam)
        local = (torch.rand(400, 3, generator=gen) - 0.5) * torch.tensor([3.9, 1.9, 1.5])
        c, s = math.cos(yaw), math.sin(yaw)
        pts = torch.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1],
                           local[:, 2]], 1) + centre
        gt = GroundTruth(Boxes3D(box), torch.tensor([3]))
        out.append((torch.cat([pts, torch.zeros(400, 2)], 1), gt))
    return K, T, aug, out


@pytest.mark.parametrize("yaw", [0.4, -2.5])
def test_pixel_targets_painted_back_give_the_boxes_heading(kit, yaw):
    """The yaw targets, relative to each ray and signed by the view's handedness, turned back
    into the BEV frame by the painting, are the box's heading: through a BEV mirror and
    rotation, an image flip (camera 1) and none (cameras 0 and 2), so that a camera network
    that reads a car's front from the image is taught a consistent target in every view."""
    from perception.models.camera.paint import pixel_targets

    K, T, aug, scenes = _box_scene(kit, yaw)
    # The BEV augmentation mirrors the scene: the box's yaw in that frame is what it is given.
    for cam, (cloud, gt) in enumerate(scenes):
        mask = torch.zeros(1, 3, dtype=torch.bool)
        mask[0, cam] = True
        classes, target = pixel_targets([cloud], torch.zeros(1, dtype=torch.int64), [gt],
                                        time_lag_col=4, intrinsics=K, ego_T_camera=T,
                                        img_aug=aug, camera_mask=mask, feature_shape=(16, 44),
                                        stride=8)
        hit = classes[0, cam] == 4
        assert hit.sum() >= 3 and ((classes[0, cam] == IGNORE) | hit).all()
        assert (classes[0, [c for c in range(3) if c != cam]] == IGNORE).all()
        painted = paint_points(torch.zeros(1, 3, 1, 16, 44), [cloud],
                               torch.zeros(1, dtype=torch.int64), time_lag_col=4, intrinsics=K,
                               ego_T_camera=T, img_aug=aug, camera_mask=mask, stride=8,
                               grid=GRID, yaw=target)
        cells = painted[0, 3] > 0
        assert cells.sum() >= 3
        # Within a feature pixel's width of azimuth: the points behind a pixel's nearest one
        # take its target, relative to a ray a few hundredths of a radian off their own.
        heading = torch.atan2(painted[0, 1][cells], painted[0, 2][cells])
        off = torch.remainder(heading - yaw + math.pi, 2 * math.pi) - math.pi
        assert off.abs().max() < 0.05
    # The three views' relative-yaw targets differ in sign where their handedness differs.
    from perception.models.camera.paint import view_handedness
    assert view_handedness(T, aug)[0].tolist() == [-1.0, 1.0, -1.0]


def test_pixel_targets_name_the_nearest_point_and_background(kit):
    """Each pixel's class is that of its nearest point: a box in front hides what lies behind
    it; a point in no box is background (0)."""
    from perception.models.camera.paint import pixel_targets
    from perception.structures import Boxes3D, GroundTruth

    K, T = kit.camera_rig(1, (128, 352))
    K, T, aug = K[None], T[None], torch.eye(3)[None, None]
    fwd, centre = T[0, 0, :3, 2], T[0, 0, :3, 3]
    box_centre = centre + 10.0 * fwd
    gt = GroundTruth(Boxes3D(torch.tensor([[*box_centre.tolist(), 1.0, 1.0, 1.0, 0.0, 0.0,
                                            0.0]])), torch.tensor([0]))

    def at(depth):
        return torch.cat([centre + depth * fwd, torch.zeros(2)])[None]

    args = dict(time_lag_col=4, intrinsics=K, ego_T_camera=T, img_aug=aug,
                camera_mask=torch.ones(1, 1, dtype=torch.bool), feature_shape=(16, 44),
                stride=8)
    pasted = torch.zeros(1, dtype=torch.int64)
    axis = (64 // 8, 176 // 8)
    cls, _ = pixel_targets([torch.cat([at(30.0), at(10.0)])], pasted, [gt], **args)
    assert cls[0, 0][axis] == 1 and (cls >= 0).sum() == 1
    cls, yaw = pixel_targets([at(30.0)], pasted, [gt], **args)
    assert cls[0, 0][axis] == 0 and yaw.abs().sum() == 0
    none = GroundTruth(Boxes3D(torch.zeros(0, 9)), torch.zeros(0, dtype=torch.int64))
    cls, _ = pixel_targets([at(10.0)], pasted, [none], **args)
    assert cls[0, 0][axis] == 0


def test_pixel_loss_trains_the_pixel_head(kit):
    """With ``pixel_weight`` the model reports ``loss_pixel``, which trains the pixel head; the
    head's outputs are painted (its class probabilities and heading channels)."""
    torch.manual_seed(0)
    cfg = _paint_config(kit)
    cfg = replace(cfg, camera=replace(cfg.camera, pixel_weight=1.0))
    model = build_model(cfg)
    assert model.painter.pixel_head is not None
    batch = _keyframe_batch(kit, batch_size=1)
    out = model(batch)
    assert out.pixel_logits.shape[2] == 1 + len(cfg.classes) + 2
    losses = model.loss(out, batch)
    assert losses["loss_pixel"] > 0
    losses["loss_pixel"].backward()
    assert model.painter.pixel_head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="pixel_weight"):
        CameraConfig(pixel_weight=1.0)
