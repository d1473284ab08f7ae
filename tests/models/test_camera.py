import math

import torch

from perception.models.camera import frustum_points, resize_images
from perception.models.detector import build_camera
from perception.structures.frame import Calibration


def test_frustum_points_reproject_to_their_pixel_and_depth(kit):
    TINY_GRID, make_batch, tiny_config, camera_rig = kit.grid, kit.make_batch, kit.tiny_config, kit.camera_rig
    """Every frustum point, projected with the devkit-style Calibration.project (which applies
    img_aug after the intrinsics), lands on its feature pixel centre at its bin depth."""
    K, T = camera_rig(2, (360, 640))
    aug = torch.tensor([[0.55, 0.0, -0.0], [0.0, 0.55, -70.0], [0, 0, 1.0]]).repeat(2, 1, 1)
    depths = torch.tensor([2.5, 10.5, 40.5])
    pts = frustum_points(intrinsics=K[None], ego_T_camera=T[None], img_aug=aug[None],
                         camera_mask=torch.ones(1, 2, dtype=torch.bool), feature_shape=(16, 44),
                         stride=8, depths=depths)
    assert pts.shape == (1, 2, 3, 16, 44, 3)
    for n in range(2):
        calib = Calibration(ego_T_sensor=T[n].double(), intrinsics=K[n].double(),
                            img_aug=aug[n].double())
        uv, d = calib.project(pts[0, n].reshape(-1, 3))
        v, u = torch.meshgrid((torch.arange(16) + 0.5) * 8, (torch.arange(44) + 0.5) * 8,
                              indexing="ij")
        expect_uv = torch.stack([u, v], -1).reshape(1, -1, 2).expand(3, -1, -1).reshape(-1, 2)
        torch.testing.assert_close(uv.float(), expect_uv.float(), atol=2e-3, rtol=0)
        torch.testing.assert_close(d.float(), depths.repeat_interleave(16 * 44), atol=1e-4,
                                   rtol=1e-5)


def test_frustum_points_of_missing_camera_are_nan(kit):
    TINY_GRID, make_batch, tiny_config, camera_rig = kit.grid, kit.make_batch, kit.tiny_config, kit.camera_rig
    K, T = camera_rig(2, (32, 64))
    pts = frustum_points(intrinsics=K[None], ego_T_camera=T[None], img_aug=torch.eye(3).repeat(1, 2, 1, 1),
                         camera_mask=torch.tensor([[True, False]]), feature_shape=(4, 8),
                         stride=8, depths=torch.tensor([5.0]))
    assert torch.isfinite(pts[0, 0]).all() and torch.isnan(pts[0, 1]).all()


def test_resize_images_keeps_projection_exact(kit):
    TINY_GRID, make_batch, tiny_config, camera_rig = kit.grid, kit.make_batch, kit.tiny_config, kit.camera_rig
    """A bright pixel at a projected 3D point is still at the point's projection after resize."""
    batch = make_batch(grid=TINY_GRID, batch_size=1, n_cams=1, image_size=(360, 640))
    calib0 = Calibration(ego_T_sensor=batch.ego_T_camera[0, 0].double(),
                         intrinsics=batch.intrinsics[0, 0].double(), img_aug=batch.img_aug[0, 0].double())
    point = torch.tensor([[12.0, 1.5, 0.3]])
    uv0, _ = calib0.project(point)
    img = torch.zeros(1, 1, 3, 360, 640, dtype=torch.uint8)
    u, v = int(uv0[0, 0]), int(uv0[0, 1])
    img[..., v - 6:v + 6, u - 6:u + 6] = 255
    from dataclasses import replace
    out = resize_images(replace(batch, images=img), (128, 352))
    assert out.images.shape == (1, 1, 3, 128, 352) and out.images.dtype == torch.uint8
    calib1 = Calibration(ego_T_sensor=out.ego_T_camera[0, 0].double(),
                         intrinsics=out.intrinsics[0, 0].double(), img_aug=out.img_aug[0, 0].double())
    uv1, _ = calib1.project(point)
    ys, xs = torch.nonzero(out.images[0, 0, 0] > 128, as_tuple=True)
    centre = torch.tensor([xs.float().mean() + 0.5, ys.float().mean() + 0.5])
    assert torch.allclose(centre, uv1[0].float(), atol=0.6), (centre, uv1)
    # Scale 0.55 (width 640 -> 352), height 360 -> 198, bottom 128 rows kept.
    assert math.isclose(float(out.img_aug[0, 0, 0, 0]), 352 / 640, rel_tol=1e-6)
    assert math.isclose(float(out.img_aug[0, 0, 1, 2]), -(198 - 128), rel_tol=1e-6)


def test_camera_encoder_forward_backward_and_coverage(kit):
    TINY_GRID, make_batch, tiny_config, camera_rig = kit.grid, kit.make_batch, kit.tiny_config, kit.camera_rig
    cfg = tiny_config(("camera",))
    enc = build_camera(cfg)
    batch = make_batch(grid=TINY_GRID, batch_size=2, n_cams=2)
    mask = torch.tensor([[True, True], [True, False]])
    bev = enc(batch.images, camera_mask=mask, intrinsics=batch.intrinsics,
              ego_T_camera=batch.ego_T_camera, img_aug=batch.img_aug)
    assert bev.features.shape == (2, cfg.camera.out_channels, *TINY_GRID.shape)
    # Camera 0 looks along +x, camera 1 along -x: frame 1 (camera 1 missing) sees only x > 0.
    xy = TINY_GRID.cell_centers()
    ahead = bev.valid[1][xy[..., 0] > 2.0].float().mean()
    behind = bev.valid[1][xy[..., 0] < -2.0]
    assert ahead > 0.1 and not behind.any()
    assert bev.valid[0][xy[..., 0] < -2.0].float().mean() > 0.1
    bev.features.sum().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_camera_encoder_with_every_camera_present_skips_the_index_and_agrees(kit):
    """Given the camera mask on the host and every camera present, the CNN takes the images as
    they are (no boolean index: on CUDA nothing waits for the GPU); the output is the same."""
    cfg = kit.tiny_config(("camera",))
    enc = build_camera(cfg).eval()
    batch = kit.make_batch(grid=kit.grid, batch_size=2, n_cams=2)
    mask = torch.ones(2, 2, dtype=torch.bool)
    kw = dict(intrinsics=batch.intrinsics, ego_T_camera=batch.ego_T_camera, img_aug=batch.img_aug)
    with torch.no_grad():
        indexed = enc(batch.images, camera_mask=mask, **kw)
        direct = enc(batch.images, camera_mask=mask, camera_mask_host=mask.clone(), **kw)
        # A host mask with a camera missing takes the indexed path.
        partial = mask.clone()
        partial[1, 1] = False
        a = enc(batch.images, camera_mask=partial, camera_mask_host=partial, **kw)
        b = enc(batch.images, camera_mask=partial, **kw)
    torch.testing.assert_close(direct.features, indexed.features)
    assert torch.equal(direct.valid, indexed.valid)
    torch.testing.assert_close(a.features, b.features)
    assert not torch.equal(a.valid, direct.valid)


def test_lift_geometry_is_cached_per_calibration(kit):
    """The lift looks its geometry up before computing any frustum point; a changed calibration
    (one intrinsic, one camera missing) is a different key."""
    cfg = kit.tiny_config(("camera",))
    lift = build_camera(cfg).lift
    batch = kit.make_batch(grid=kit.grid, batch_size=1, n_cams=2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    kw = dict(intrinsics=batch.intrinsics, ego_T_camera=batch.ego_T_camera, img_aug=batch.img_aug,
              feature_shape=(4, 6))
    g = lift.geometry(camera_mask=mask, **kw)
    assert lift.geometry(camera_mask=mask.clone(), **kw) is g
    other = dict(kw, intrinsics=batch.intrinsics.clone())
    other["intrinsics"][0, 0, 0, 0] += 1e-3
    assert lift.geometry(camera_mask=mask, **other) is not g
    assert lift.geometry(camera_mask=torch.tensor([[True, False]]), **kw) is not g
