"""Calibration, SensorSample, Frame and Batch collation (including frames with missing sensors)."""
import math

import pytest
import torch

from perception.structures import (
    CAMERA_CHANNELS,
    LIDAR_FIELDS,
    RADAR_FIELDS,
    Boxes3D,
    Calibration,
    Frame,
    GroundTruth,
    SensorSample,
    collate,
    points_with_batch_index,
)

K = torch.tensor([[1000.0, 0, 800], [0, 1000.0, 450], [0, 0, 1]])


def camera_calib(yaw: float = 0.0) -> Calibration:
    # Camera looking along ego +x rotated by yaw: camera z (optical) = ego x, camera x = -ego y.
    R_cam = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=torch.float64)
    Rz = torch.tensor([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]],
                      dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = Rz @ R_cam
    T[:3, 3] = torch.tensor([1.0, 0.0, 1.5])
    return Calibration(ego_T_sensor=T, intrinsics=K)


def make_frame(token, n_lidar=10, radars=("RADAR_FRONT",), cameras=CAMERA_CHANNELS, gt=True):
    lidar = None
    if n_lidar is not None:
        lidar = SensorSample("LIDAR_TOP", torch.randn(n_lidar, 5), Calibration(torch.eye(4)), 10,
                             fields=LIDAR_FIELDS)
    return Frame(
        token=token, timestamp=10, global_T_ego=torch.eye(4),
        lidar=lidar,
        radars={ch: SensorSample(ch, torch.randn(3, len(RADAR_FIELDS)), Calibration(torch.eye(4)), 11,
                                 fields=RADAR_FIELDS) for ch in radars},
        cameras={ch: SensorSample(ch, torch.full((3, 4, 6), i, dtype=torch.uint8), camera_calib(i), 12)
                 for i, ch in enumerate(CAMERA_CHANNELS) if ch in cameras},
        gt=GroundTruth(Boxes3D(torch.zeros(2, 9)), labels=[0, 1]) if gt else None,
    )


def test_calibration_validation_and_projection():
    with pytest.raises(ValueError):
        Calibration(torch.eye(3))
    calib = camera_calib()
    assert calib.ego_T_sensor.dtype == torch.float64
    assert torch.equal(calib.img_aug, torch.eye(3, dtype=torch.float64))
    pts = torch.tensor([[11.0, 0.0, 1.5], [11.0, -1.0, 0.5], [-5.0, 0, 0]])
    uv, depth = calib.project(pts)
    torch.testing.assert_close(depth, torch.tensor([10.0, 10.0, -6.0], dtype=torch.float64))
    torch.testing.assert_close(uv[:2], torch.tensor([[800.0, 450.0], [900.0, 550.0]], dtype=torch.float64))
    # A half-resolution resize is a scaling of pixel coordinates.
    calib.img_aug = torch.diag(torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(calib.project(pts)[0][:2], uv[:2] / 2)
    with pytest.raises(ValueError):
        Calibration(torch.eye(4)).project(pts)


def test_sensor_sample_validation():
    with pytest.raises(ValueError):
        SensorSample("CAM_FRONT", torch.zeros(4, 6, 3, dtype=torch.uint8), camera_calib(), 0)
    with pytest.raises(ValueError):
        SensorSample("LIDAR_TOP", torch.zeros(4, 4), Calibration(torch.eye(4)), 0, fields=LIDAR_FIELDS)
    s = make_frame("a").lidar
    assert torch.equal(s.column("time_lag"), s.points[:, 4])
    with pytest.raises(AttributeError):
        s.image


def test_frame_modalities_with_missing_sensors():
    assert make_frame("a").modalities == {"lidar", "radar", "camera"}
    f = make_frame("b", n_lidar=None, radars=(), cameras=())
    assert f.modalities == frozenset() and f.lidar is None and f.radars == {} and f.cameras == {}
    assert make_frame("c", n_lidar=None).modalities == {"radar", "camera"}
    assert make_frame("a").to("meta").lidar.points.device.type == "meta"


def test_collate_mixed_frames():
    frames = [
        make_frame("a", n_lidar=10, radars=("RADAR_FRONT", "RADAR_BACK_LEFT")),
        make_frame("b", n_lidar=None, radars=(), cameras=CAMERA_CHANNELS[:4], gt=False),
        make_frame("c", n_lidar=7),
    ]
    b = collate(frames)
    assert len(b) == 3 and b.tokens == ["a", "b", "c"]
    assert [len(p) for p in b.lidar_points] == [10, 0, 7]
    assert b.lidar_mask.tolist() == [True, False, True]
    assert [len(p) for p in b.radar_points] == [6, 0, 3] and b.radar_mask.tolist() == [True, False, True]
    assert b.lidar_fields == LIDAR_FIELDS and b.radar_fields == RADAR_FIELDS
    assert b.images.shape == (3, 6, 3, 4, 6) and b.images.dtype == torch.uint8
    assert b.camera_mask.tolist() == [[True] * 6, [True] * 4 + [False] * 2, [True] * 6]
    assert (b.images[1, 4:] == 0).all() and (b.images[1, 3] == 3).all()
    assert b.intrinsics.shape == (3, 6, 3, 3) and b.ego_T_camera.shape == (3, 6, 4, 4)
    torch.testing.assert_close(b.ego_T_camera[2, 5], frames[2].cameras[CAMERA_CHANNELS[5]].calib.ego_T_sensor.float())
    assert torch.equal(b.ego_T_camera[1, 5], torch.eye(4))
    assert b.global_T_ego.shape == (3, 4, 4) and b.global_T_ego.dtype == torch.float64
    assert b.gt[1] is None and len(b.gt[0]) == 2
    # Radar channels are concatenated in RADAR_CHANNELS order.
    assert torch.equal(b.radar_points[0][:3], frames[0].radars["RADAR_FRONT"].points)

    flat = points_with_batch_index(b.lidar_points)
    assert flat.shape == (17, 6)
    assert flat[:, 0].tolist() == [0.0] * 10 + [2.0] * 7
    assert torch.equal(flat[10:, 1:], frames[2].lidar.points)

    moved = b.to("meta")
    assert moved.images.device.type == "meta" and moved.lidar_points[0].device.type == "meta"
    assert moved.gt[0].boxes.device.type == "meta" and moved.gt[1] is None


def test_collate_without_cameras_and_size_mismatch():
    b = collate([make_frame("a", cameras=()), make_frame("b", cameras=())])
    assert b.images is None and b.camera_mask is None and b.intrinsics is None
    f = make_frame("c")
    f.cameras["CAM_FRONT"].data = torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="resize"):
        collate([f])
