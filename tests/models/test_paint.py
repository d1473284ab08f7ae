"""Camera features painted onto the LiDAR points (perception/models/camera/paint.py)."""
import math
from dataclasses import replace

import pytest
import torch

from perception.models import build_model
from perception.models.camera import depth_bin_centers, frustum_points
from perception.models.camera.paint import PointPainter, paint_points
from perception.models.config import CameraConfig
from perception.structures.grid import BEVGrid

GRID = BEVGrid(x_range=(-51.2, 51.2), y_range=(-51.2, 51.2), z_range=(-5.0, 3.0),
               cell_size=0.8, voxel_z=8.0)


def _rig(kit):
    """Three cameras of 360x640 seen through a resize + crop (one mirrored), with a global BEV
    augmentation (rotation, scale, mirror, shift) folded into ego_T_camera as training does."""
    K, T = kit.camera_rig(3, (360, 640))
    aug = torch.tensor([[0.55, 0.0, 0.0], [0.0, 0.55, -70.0], [0.0, 0.0, 1.0]]).repeat(3, 1, 1)
    aug[1] = torch.tensor([[-1.0, 0.0, 352.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ aug[1]
    c, s = math.cos(0.3), math.sin(0.3)
    M = torch.tensor([[c, -s, 0.0, 1.0], [s, c, 0.0, -2.0], [0.0, 0.0, 1.0, 0.1], [0, 0, 0, 1.0]])
    M[:3, :3] *= 1.04
    M[1, :3] *= -1
    return K[None], (M @ T)[None], aug[None]


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
    K, T, aug = _rig(kit)
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
    out = painter(feats, [cloud], torch.zeros(1, dtype=torch.int64), **args)
    assert out.shape == (1, 6, *GRID.shape) and out.abs().sum() == 0
    torch.manual_seed(0)
    torch.nn.init.normal_(painter.out.weight)
    out = painter(feats, [cloud], torch.zeros(1, dtype=torch.int64), **args)
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
