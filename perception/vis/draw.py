"""Headless drawing with OpenCV: a bird's-eye view and camera overlays of one Frame.

Nothing here needs a display. Boxes come as :class:`Boxes3D` in the Frame's ego frame, so the
same functions draw ground truth and detections (detections dashed, ground truth solid).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from perception.structures import CAMERA_CHANNELS, DETECTION_CLASSES, Boxes3D, Frame

# One colour per detection class (RGB), chosen to be told apart on dark and bright backgrounds.
CLASS_COLORS = np.array([
    (255, 158, 0), (255, 99, 71), (255, 69, 0), (255, 140, 0), (233, 150, 70),
    (0, 0, 230), (255, 61, 99), (220, 20, 60), (47, 79, 79), (112, 128, 144),
], dtype=np.uint8)
assert len(CLASS_COLORS) == len(DETECTION_CLASSES)

# Box edges as index pairs into Boxes3D.corners(): front face 0-3, rear face 4-7.
_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
          (0, 4), (1, 5), (2, 6), (3, 7)]


def _color(label: int) -> tuple[int, int, int]:
    c = CLASS_COLORS[int(label) % len(CLASS_COLORS)]
    return int(c[0]), int(c[1]), int(c[2])


def draw_bev(frame: Frame, boxes: Boxes3D | None = None, labels: torch.Tensor | None = None,
             pred_boxes: Boxes3D | None = None, pred_labels: torch.Tensor | None = None,
             extent: float = 60.0, size: int = 900) -> np.ndarray:
    """Bird's-eye view of the ego frame: LiDAR coloured by height, radar returns with their
    compensated velocity, ground-truth boxes (solid) and predictions (thin), ego at the centre.

    Args:
        extent: half-width of the square view, metres. size: image side, pixels.
        boxes/labels: defaults to the frame's ground truth.
    Returns:
        (size, size, 3) uint8 RGB; +x (forward) points up, +y (left) points left.
    """
    img = np.full((size, size, 3), 18, dtype=np.uint8)
    scale = size / (2.0 * extent)

    def to_px(xy: np.ndarray) -> np.ndarray:
        # Ego x forward -> image up, ego y left -> image left.
        col = size / 2.0 - xy[..., 1] * scale
        row = size / 2.0 - xy[..., 0] * scale
        return np.stack([col, row], axis=-1)

    # Range rings every 10 m, so distances can be read off the picture.
    for r in range(10, int(extent * 1.5) + 1, 10):
        cv2.circle(img, (size // 2, size // 2), int(r * scale), (45, 45, 45), 1, cv2.LINE_AA)

    if frame.lidar is not None and len(frame.lidar.points):
        pts = frame.lidar.points.detach().cpu().numpy()
        px = np.round(to_px(pts[:, :2])).astype(np.int64)
        ok = (px[:, 0] >= 0) & (px[:, 0] < size) & (px[:, 1] >= 0) & (px[:, 1] < size)
        z = np.clip((pts[ok, 2] + 2.0) / 5.0, 0.0, 1.0)
        # Height ramp from blue-grey (ground) to white (tall structures).
        shade = (np.stack([90 + 165 * z, 110 + 145 * z, 140 + 115 * z], axis=1)).astype(np.uint8)
        img[px[ok, 1], px[ok, 0]] = shade

    for sample in frame.radars.values():
        pts = sample.points.detach().cpu().numpy()
        if not len(pts):
            continue
        vx = pts[:, sample.fields.index("vx_comp")]
        vy = pts[:, sample.fields.index("vy_comp")]
        start = to_px(pts[:, :2])
        end = to_px(pts[:, :2] + np.stack([vx, vy], axis=1) * 0.5)  # arrow = 0.5 s of motion
        for (c0, r0), (c1, r1) in zip(start.astype(int), end.astype(int)):
            cv2.circle(img, (c0, r0), 3, (0, 220, 255), 1, cv2.LINE_AA)
            if (c1, r1) != (c0, r0):
                cv2.line(img, (c0, r0), (c1, r1), (0, 220, 255), 1, cv2.LINE_AA)

    if boxes is None and frame.gt is not None:
        boxes, labels = frame.gt.boxes, frame.gt.labels
    for bx, lb, thickness in ((boxes, labels, 2), (pred_boxes, pred_labels, 1)):
        if bx is None or len(bx) == 0:
            continue
        corners = bx.bev_corners().detach().cpu().numpy()
        centers = bx.center.detach().cpu().numpy()[:, :2]
        heads = corners[:, [0, 3]].mean(axis=1)  # front edge midpoint
        lbs = lb.detach().cpu().numpy() if lb is not None else np.zeros(len(bx), dtype=np.int64)
        for poly, c, h, label in zip(corners, centers, heads, lbs):
            color = _color(label)
            cv2.polylines(img, [np.round(to_px(poly)).astype(np.int32)], True, color, thickness,
                          cv2.LINE_AA)
            cv2.line(img, tuple(np.round(to_px(c)).astype(int)), tuple(np.round(to_px(h)).astype(int)),
                     color, thickness, cv2.LINE_AA)

    # The ego car: a 4.1 x 1.8 m footprint at the origin (rear axle), pointing up.
    ego = np.array([[4.1 - 1.0, 0.9], [-1.0, 0.9], [-1.0, -0.9], [4.1 - 1.0, -0.9]])
    cv2.fillPoly(img, [np.round(to_px(ego)).astype(np.int32)], (0, 200, 90))
    return img


def draw_camera(frame: Frame, channel: str, boxes: Boxes3D | None = None,
                labels: torch.Tensor | None = None) -> np.ndarray:
    """The camera image with 3D boxes (default: the frame's ground truth) projected onto it.

    Returns (H, W, 3) uint8 RGB. Edges with an end behind the camera are clipped at 0.1 m depth
    rather than dropped, so boxes beside the car still show the part in view.
    """
    cam = frame.cameras[channel]
    img = np.ascontiguousarray(cam.image.detach().cpu().permute(1, 2, 0).numpy())
    if boxes is None and frame.gt is not None:
        boxes, labels = frame.gt.boxes, frame.gt.labels
    if boxes is None or len(boxes) == 0:
        return img
    corners = boxes.corners().detach().cpu().to(torch.float64)  # (N, 8, 3) ego frame
    T = cam.calib.sensor_T_ego.cpu()
    cam_pts = corners @ T[:3, :3].T + T[:3, 3]  # (N, 8, 3) camera frame
    K = cam.calib.intrinsics.cpu()
    A = cam.calib.img_aug.cpu()
    h, w = img.shape[:2]
    lbs = labels.detach().cpu().numpy() if labels is not None else np.zeros(len(boxes), np.int64)
    near = 0.1
    for box_pts, label in zip(cam_pts.numpy(), lbs):
        if (box_pts[:, 2] <= near).all():
            continue
        color = _color(label)
        for i, j in _EDGES:
            p, q = box_pts[i], box_pts[j]
            if p[2] <= near and q[2] <= near:
                continue
            # Clip the edge at the near plane so the visible part of the edge is drawn.
            if p[2] <= near or q[2] <= near:
                t = (near - p[2]) / (q[2] - p[2])
                cut = p + t * (q - p)
                p, q = (cut, q) if p[2] <= near else (p, cut)
            seg = np.stack([p, q]) @ K.numpy().T
            seg = seg[:, :2] / seg[:, 2:3]
            seg = np.concatenate([seg, np.ones((2, 1))], axis=1) @ A.numpy().T
            seg = seg[:, :2] / seg[:, 2:3]
            # Far-off endpoints overflow cv2's int coordinates; clip to a generous window.
            seg = np.clip(seg, -4 * max(w, h), 5 * max(w, h))
            cv2.line(img, tuple(np.round(seg[0]).astype(int)), tuple(np.round(seg[1]).astype(int)),
                     color, 2, cv2.LINE_AA)
    return img


def render_sample(frame: Frame, path: str | Path, pred_boxes: Boxes3D | None = None,
                  pred_labels: torch.Tensor | None = None, camera_width: int = 480) -> Path:
    """One picture of a Frame: the 6 cameras (front row, back row) above the bird's-eye view.

    Writes a PNG to ``path`` (folders created) and returns its path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Front row left to right as a driver sees it; back row mirrored the same way.
    layout = [["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"],
              ["CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]]
    assert {c for row in layout for c in row} == set(CAMERA_CHANNELS)
    rows = []
    cam_h = None
    for row in layout:
        panels = []
        for ch in row:
            if ch in frame.cameras:
                panel = draw_camera(frame, ch)
                ph = int(round(panel.shape[0] * camera_width / panel.shape[1]))
                panel = cv2.resize(panel, (camera_width, ph), interpolation=cv2.INTER_AREA)
                cam_h = cam_h or ph
            else:
                panel = None
            panels.append((ch, panel))
        rows.append(panels)
    cam_h = cam_h or int(camera_width * 9 / 16)
    grid_rows = []
    for panels in rows:
        out = []
        for ch, panel in panels:
            if panel is None:
                # A missing sensor is shown as missing, not as a black image that looks like night.
                panel = np.full((cam_h, camera_width, 3), 40, dtype=np.uint8)
                cv2.putText(panel, f"{ch}: missing", (10, cam_h // 2), cv2.FONT_HERSHEY_SIMPLEX,
                            0.7, (230, 80, 80), 2, cv2.LINE_AA)
            else:
                panel = cv2.resize(panel, (camera_width, cam_h), interpolation=cv2.INTER_AREA)
                cv2.putText(panel, ch, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2,
                            cv2.LINE_AA)
            out.append(panel)
        grid_rows.append(np.concatenate(out, axis=1))
    cams = np.concatenate(grid_rows, axis=0)
    bev = draw_bev(frame, pred_boxes=pred_boxes, pred_labels=pred_labels, size=cams.shape[1] // 2)
    pad = np.full((bev.shape[0], cams.shape[1] - bev.shape[1], 3), 18, dtype=np.uint8)
    legend_y = 30
    for i, name in enumerate(DETECTION_CLASSES):
        cv2.putText(pad, name, (20, legend_y + 28 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.7, _color(i), 2,
                    cv2.LINE_AA)
    info = [f"sample {frame.token[:12]}", f"scene {frame.scene_name}",
            f"LiDAR sweeps {frame.lidar.num_sweeps if frame.lidar is not None else 0}",
            f"GT boxes {len(frame.gt.boxes) if frame.gt is not None else 0}"]
    for i, line in enumerate(info):
        cv2.putText(pad, line, (260, legend_y + 28 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                    (220, 220, 220), 2, cv2.LINE_AA)
    picture = np.concatenate([cams, np.concatenate([bev, pad], axis=1)], axis=0)
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
