"""Depth supervision of the camera lift from LiDAR (perception/models/camera/depth.py)."""
from dataclasses import replace

import torch

from perception.models import build_model
from perception.models.camera import depth_bin_centers, frustum_points
from perception.models.camera.depth import IGNORE, depth_loss, lidar_depth_targets

BINS = (1.0, 52.0, 1.0)


def _targets(points, *, K, T, aug, mask, pasted=None, lag_col=4, shape=(16, 44)):
    pasted = torch.zeros(len(points), dtype=torch.int64) if pasted is None else pasted
    return lidar_depth_targets(points, pasted, time_lag_col=lag_col, intrinsics=K, ego_T_camera=T,
                               img_aug=aug, camera_mask=mask, feature_shape=shape, stride=8,
                               depth_bins=BINS)


def test_targets_are_the_bins_the_lift_puts_those_points_in(kit):
    """LiDAR points placed at the lift's own frustum points (one random bin per feature pixel)
    come back as exactly those bins at those pixels: targets and lift share one geometry, through
    image resize, crop and mirror and a global BEV augmentation."""
    K, T, aug = kit.augmented_rig()
    depths = depth_bin_centers(BINS)
    pts = frustum_points(intrinsics=K, ego_T_camera=T, img_aug=aug,
                         camera_mask=torch.ones(1, 3, dtype=torch.bool), feature_shape=(16, 44),
                         stride=8, depths=depths)[0]                           # (3, D, 16, 44, 3)
    k = torch.randint(0, len(depths), (3, 16, 44), generator=torch.Generator().manual_seed(0))
    chosen = torch.gather(pts, 1, k[:, None, :, :, None].expand(-1, 1, -1, -1, 3)).squeeze(1)
    cloud = torch.cat([chosen.reshape(-1, 3), torch.zeros(3 * 16 * 44, 2)], 1)
    t = _targets([cloud], K=K, T=T, aug=aug, mask=torch.tensor([[True, True, False]]))
    assert torch.equal(t[0, 0], k[0]) and torch.equal(t[0, 1], k[1])
    assert (t[0, 2] == IGNORE).all(), "a camera not asked for gets no targets"


def test_targets_take_the_nearest_measured_keyframe_point(kit):
    K, T = kit.camera_rig(1, (128, 352))
    K, T, aug = K[None], T[None], torch.eye(3)[None, None]
    fwd, right = T[0, 0, :3, 2], T[0, 0, :3, 0]
    centre = T[0, 0, :3, 3]

    def at(depth, lag=0.0, side=0.0):  # a point on the optical axis (or beside it), x y z i lag
        p = centre + depth * fwd + side * right
        return torch.cat([p, torch.tensor([0.0, lag])])[None]

    # feature pixel of the axis: image centre (176, 64) -> (row 8, col 22)
    cloud = torch.cat([
        at(20.3), at(7.6),          # two measured keyframe points: the nearer one wins
        at(60.0, side=-6.0),        # beyond the last bin: no target there
        at(-5.0),                   # behind the camera
        at(3.2, lag=0.05),          # an older sweep: skipped
        at(2.1),                    # pasted (the last row): skipped
    ])
    t = _targets([cloud], K=K, T=T, aug=aug, mask=torch.ones(1, 1, dtype=torch.bool),
                 pasted=torch.tensor([1]))
    assert t[0, 0, 8, 22] == int(7.6 - 1.0)
    assert int((t != IGNORE).sum()) == 1
    # Without the lag column every row is keyframe; without pasted rows the 2.1 m point counts.
    t = _targets([cloud], K=K, T=T, aug=aug, mask=torch.ones(1, 1, dtype=torch.bool), lag_col=None)
    assert t[0, 0, 8, 22] == int(2.1 - 1.0)
    # An empty cloud gives no targets and no error.
    t = _targets([cloud[:0]], K=K, T=T, aug=aug, mask=torch.ones(1, 1, dtype=torch.bool))
    assert (t == IGNORE).all()


def test_depth_loss_is_cross_entropy_over_pixels_with_a_target():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 5, 2, 3, generator=g, requires_grad=True)
    targets = torch.full((1, 2, 2, 3), IGNORE)
    targets[0, 0, 1, 2], targets[0, 1, 0, 0] = 3, 0
    expect = -(logits[0, 0, :, 1, 2].log_softmax(0)[3]
               + logits[0, 1, :, 0, 0].log_softmax(0)[0]) / 2
    torch.testing.assert_close(depth_loss(logits, targets), expect)
    none = depth_loss(logits, torch.full_like(targets, IGNORE))
    none.backward()
    assert float(none.detach()) == 0.0 and torch.count_nonzero(logits.grad) == 0


def _model(kit, weight):
    cfg = kit.tiny_config()
    cfg = replace(cfg, camera=replace(cfg.camera, depth_weight=weight),
                  fusion=replace(cfg.fusion, modality_dropout=0.0))
    torch.manual_seed(0)
    return build_model(cfg).train()


def _keyframe(batch):
    """The test batch's LiDAR with its time-lag column zeroed (all keyframe points)."""
    pts = [p.clone() for p in batch.lidar_points]
    for p in pts:
        p[:, 4] = 0.0
    return replace(batch, lidar_points=pts)


def test_depth_loss_trains_the_depth_net_and_nothing_downstream(kit):
    model = _model(kit, 3.0)
    batch = _keyframe(kit.make_batch(grid=kit.grid, batch_size=2, n_cams=2, seed=1))
    out = model(batch)
    losses = model.loss(out, batch)
    assert float(losses["loss_depth"].detach()) > 0
    losses["loss_depth"].backward()
    lift = model.encoders["camera"].lift
    assert lift.net[-1].weight.grad[:lift.num_depth].abs().sum() > 0
    assert lift.net[-1].weight.grad[lift.num_depth:].abs().sum() == 0, "context is not trained"
    assert all(p.grad is None or p.grad.abs().sum() == 0
               for p in list(model.fuser.parameters()) + list(model.head.parameters()))
    assert "loss_depth" not in _model(kit, 0.0).loss(out, batch)


def test_no_depth_loss_without_lidar_or_unused_cameras(kit):
    model = _model(kit, 3.0)
    batch = _keyframe(kit.make_batch(grid=kit.grid, batch_size=2, n_cams=2, seed=1))
    no_lidar = replace(batch, lidar_mask=torch.tensor([False, False]))
    assert float(model.loss(model(no_lidar), no_lidar)["loss_depth"].detach()) == 0.0
    out = model(batch, modalities=("lidar", "radar"))
    assert out.depth_logits is None and float(model.loss(out, batch)["loss_depth"].detach()) == 0.0


def test_depth_supervision_overfits(kit):
    """Trained on the depth loss alone, the lift learns the two frames' LiDAR depths."""
    model = _model(kit, 1.0)
    batch = _keyframe(kit.make_batch(grid=kit.grid, batch_size=2, n_cams=2, seed=1))
    opt = torch.optim.Adam(model.encoders["camera"].parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        loss = model.loss(model(batch), batch)["loss_depth"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.5 * history[0], history
