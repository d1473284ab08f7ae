import pytest
import torch

from perception.models.detector import build_lidar, build_radar
from perception.models.radar import RAW_CHANNELS


def test_lidar_encoder_forward_backward_with_a_missing_frame(kit):
    TINY_GRID, make_batch, tiny_config, camera_rig = kit.grid, kit.make_batch, kit.tiny_config, kit.camera_rig
    enc = build_lidar(tiny_config(("lidar",)))
    batch = make_batch(grid=TINY_GRID, batch_size=2)
    present = torch.tensor([True, False])
    feats, coords = enc.voxelize(batch.lidar_points, present)
    assert (coords[:, 0] == 0).all() and len(feats) > 100
    # The offset columns say where the mean point sits inside its voxel: within half a voxel,
    # in units of the voxel size; coordinates within +-1 of the grid; time lag in units of 0.5 s.
    assert (feats[:, -3:].abs() <= 0.5 + 1e-5).all()
    assert feats[:, :3].abs().max() <= 1.0 + 1e-5
    lag = feats[:, 4]
    assert lag.min() >= 0 and lag.max() <= batch.lidar_points[0][:, 4].max() / 0.5 + 1e-5
    assert lag.max() > 1.0    # the test's lags reach ~1 s: scaled, not clipped
    bev = enc(batch.lidar_points, present)
    assert bev.features.shape == (2, enc.out_channels, *TINY_GRID.shape)
    assert bev.valid[0].all() and not bev.valid[1].any()
    bev.features[0].sum().backward()
    assert enc.backbone.stages[0][0][0].weight.grad.abs().sum() > 0


def test_lidar_encoder_without_points_returns_zeros_shape(kit):
    TINY_GRID, make_batch, tiny_config, camera_rig = kit.grid, kit.make_batch, kit.tiny_config, kit.camera_rig
    enc = build_lidar(tiny_config(("lidar",)))
    bev = enc([torch.zeros(0, 5)], torch.tensor([True]))
    assert bev.features.shape == (1, enc.out_channels, *TINY_GRID.shape) and bev.valid.all()


def test_radar_raw_velocity_reaches_the_bev_map(kit):
    TINY_GRID, make_batch, tiny_config, camera_rig = kit.grid, kit.make_batch, kit.tiny_config, kit.camera_rig
    enc = build_radar(tiny_config(("radar",)))
    batch = make_batch(grid=TINY_GRID, batch_size=1)
    pts = torch.zeros(2, len(batch.radar_fields))
    pts[:, 0:2] = torch.tensor([[3.3, -4.1], [3.5, -4.3]])   # same 0.8 m cell
    pts[:, 4:6] = torch.tensor([[4.0, -2.0], [6.0, 0.0]])    # vx_comp, vy_comp
    bev = enc([pts], batch.radar_fields, torch.tensor([True]))
    assert bev.features.shape == (1, enc.out_channels, *TINY_GRID.shape)
    row, col = TINY_GRID.xy_to_cell(pts[:1, :2])[0].tolist()
    raw = bev.features[0, -RAW_CHANNELS:, row, col]
    scale = enc.max_abs_velocity
    torch.testing.assert_close(raw, torch.tensor([5.0 / scale, -1.0 / scale, float(torch.log1p(torch.tensor(2.0)))]))
    assert bev.features[0, -RAW_CHANNELS:].abs().sum() == raw.abs().sum()  # nowhere else
    bev.features.sum().backward()
    assert enc.mlp[0].weight.grad.abs().sum() > 0


def test_radar_point_inputs_are_of_order_one(kit):
    from perception.models.config import RadarConfig

    cfg = RadarConfig()
    assert (cfg.max_abs_velocity, cfg.rcs_scale, cfg.time_lag_scale) == (5.0, 0.1, 2.0)
    enc = build_radar(kit.tiny_config(("radar",)))
    fields = kit.make_batch(grid=kit.grid, batch_size=1).radar_fields
    p = torch.zeros(1, len(fields))
    p[0, 0:3] = torch.tensor([3.3, -4.1, 0.6])
    for name, value in (("rcs", 20.0), ("vx_comp", 10.0), ("vy_comp", -5.0), ("time_lag", 0.25)):
        p[0, fields.index(name)] = value
    f, _ = enc.point_features(p, fields)
    cols = dict(zip(enc.point_fields, f[0, 2:].tolist()))   # after the two in-cell offsets
    assert cols == pytest.approx({"z": 0.6, "rcs": 2.0, "vx_comp": 2.0, "vy_comp": -1.0,
                                  "time_lag": 0.5})


def test_radar_points_outside_the_grid_or_nan_change_nothing(kit):
    """Returns outside the grid (or with NaN positions) are kept through the MLP at fixed size but
    land in a spare row: the map and the gradients are those of the inside returns alone."""
    enc = build_radar(kit.tiny_config(("radar",)))
    fields = kit.make_batch(grid=kit.grid, batch_size=1).radar_fields
    inside = torch.zeros(2, len(fields))
    inside[:, 0:2] = torch.tensor([[3.3, -4.1], [-1.0, 2.0]])
    inside[:, fields.index("vx_comp")] = torch.tensor([4.0, -3.0])
    outside = torch.zeros(3, len(fields))
    outside[:, 0:2] = torch.tensor([[500.0, 0.0], [float("nan"), 1.0], [0.0, -1e4]])
    outside[:, fields.index("vx_comp")] = 7.0
    both = torch.cat([outside[:2], inside[:1], outside[2:], inside[1:]])
    grads = []
    for pts in (inside, both):
        enc.zero_grad()
        bev = enc([pts], fields, torch.tensor([True]))
        bev.features.square().sum().backward()
        grads.append(enc.mlp[0].weight.grad.clone())
        if pts is inside:
            ref = bev.features.detach()
    torch.testing.assert_close(bev.features.detach(), ref)
    assert torch.isfinite(grads[1]).all()
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)  # summation order
    _, cell = enc.point_features(both, fields)
    assert cell.tolist()[:2] == [-1, -1] and cell[3] == -1 and (cell[[2, 4]] >= 0).all()
