"""Drawing lands where the geometry says: boxes in the BEV and on camera images."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from perception.structures import (LIDAR_FIELDS, RADAR_FIELDS, Boxes3D, Calibration, Frame,
                                   GroundTruth, SensorSample)
from perception.vis import draw_bev, draw_camera, render_sample
from perception.vis.draw import CLASS_COLORS

# A camera at the ego origin, 1.5 m up, looking along +x (camera z = ego x, camera x = -ego y,
# camera y = -ego z).
EGO_T_CAM = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1]], dtype=np.float64)
K = np.array([[200.0, 0, 160], [0, 200.0, 90], [0, 0, 1]])


def _frame(boxes: np.ndarray, labels: list[int], with_camera: bool = True) -> Frame:
    lidar = SensorSample("LIDAR_TOP", torch.tensor([[5.0, 5.0, 0.0, 10.0, 0.0]]),
                         Calibration(np.eye(4)), 0, fields=LIDAR_FIELDS)
    radar_pts = torch.zeros(1, len(RADAR_FIELDS))
    radar_pts[0, :2] = torch.tensor([20.0, -3.0])
    radar = SensorSample("RADAR_FRONT", radar_pts, Calibration(np.eye(4)), 0, fields=RADAR_FIELDS)
    cameras = {}
    if with_camera:
        img = torch.zeros(3, 180, 320, dtype=torch.uint8)
        cameras["CAM_FRONT"] = SensorSample("CAM_FRONT", img, Calibration(EGO_T_CAM, K), 0)
    gt = GroundTruth(Boxes3D(torch.as_tensor(boxes, dtype=torch.float32)), torch.tensor(labels))
    return Frame(token="t" * 32, timestamp=0, global_T_ego=np.eye(4), lidar=lidar,
                 radars={"RADAR_FRONT": radar}, cameras=cameras, gt=gt)


def test_bev_box_edges_and_points_at_their_metric_place():
    # A car 20 m ahead, 4 m long, 2 m wide; 60 m half-extent over 600 px: 5 px per metre.
    frame = _frame(np.array([[20.0, 0, 0.8, 4.0, 2.0, 1.6, 0, 0, 0]]), [0])
    img = draw_bev(frame, extent=60.0, size=600)
    car = tuple(int(v) for v in CLASS_COLORS[0])
    # Front edge of the box at x = 22 m -> row 300 - 22*5 = 190, columns 295..305 (y = +-1 m).
    assert (img[188:193, 297:304] == car).all(axis=-1).any()
    # Nothing of that colour far from the box.
    assert not (img[400:, :] == car).all(axis=-1).any()
    # The LiDAR point at (5, 5): row 275, col 275, drawn brighter than the background.
    assert img[275, 275].sum() > 3 * 18 + 100


def test_camera_overlay_projects_box_edges():
    box = np.array([[10.0, 0, 1.5, 2.0, 2.0, 2.0, 0, 0, 0]])  # cube centred on the optical axis
    frame = _frame(box, [5])
    img = draw_camera(frame, "CAM_FRONT")
    ped = tuple(int(v) for v in CLASS_COLORS[5])
    # The near face (x = 9 m) spans +-1 m: 200 * 1 / 9 = 22.2 px around the principal point.
    mask = (np.abs(img.astype(int) - ped).sum(-1) < 60)
    rows, cols = np.nonzero(mask)
    assert abs(cols.min() - (160 - 22.2)) <= 2 and abs(cols.max() - (160 + 22.2)) <= 2
    assert abs(rows.min() - (90 - 22.2)) <= 2 and abs(rows.max() - (90 + 22.2)) <= 2


def test_box_behind_camera_is_not_drawn_and_side_box_is_clipped():
    frame = _frame(np.array([[-10.0, 0, 1.5, 2, 2, 2, 0, 0, 0], [2.0, 3.0, 1.5, 8, 2, 2, 0, 0, 0]]),
                   [0, 1])
    img = draw_camera(frame, "CAM_FRONT")
    car = tuple(int(v) for v in CLASS_COLORS[0])
    truck = tuple(int(v) for v in CLASS_COLORS[1])
    assert not (np.abs(img.astype(int) - car).sum(-1) < 30).any()
    # The truck beside the camera reaches 6 m ahead: its front part is visible on the left.
    truck_px = np.nonzero(np.abs(img.astype(int) - truck).sum(-1) < 30)
    assert len(truck_px[1]) > 0 and truck_px[1].min() < 160


def test_render_sample_writes_png_and_marks_missing_cameras(tmp_path):
    frame = _frame(np.array([[20.0, 0, 0.8, 4.0, 2.0, 1.6, 0, 0, 0]]), [0])
    path = render_sample(frame, tmp_path / "x" / "s.png", camera_width=320)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] == 3 * 320
    # 5 of the 6 cameras are missing: their panels are grey (40), not black, and labelled.
    assert (img[150, 10:20] == 40).all() and (img[150, 330:340] == 0).all()
