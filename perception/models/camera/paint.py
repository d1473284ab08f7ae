"""Camera features painted onto the LiDAR points (PointPainting's idea, in BEV).

The depth lift spreads each camera feature pixel along its ray; with a small budget the depth
distribution stays vague, so what a camera sees (a car's red rear lights, its white headlights,
the colour of a bus or a trailer) lands metres from where the object is. A LiDAR point has no
such doubt: projected into a camera it names the feature pixel that shows it. The painter
takes, for every keyframe LiDAR point a present camera sees, that camera's FPN feature at the
point's pixel, averages them per BEV cell and adds a learned map of them to the LiDAR BEV map
(``FusionDetector.encode``), so the LiDAR token of the fuser carries appearance exactly where
the surface is.

Which points: the keyframe sweep only (the older sweeps put moving objects where the images no
longer show them) and only measured ones (GT copy-paste appends points the cameras never saw:
``Batch.lidar_num_pasted``). A point is painted by a camera only where it is the surface the
camera sees: within ``depth_tolerance`` of the nearest point projecting into its feature pixel
(a point behind a parked car would otherwise take the car's colour).
Geometry and points as ``camera.depth.lidar_depth_targets`` (both through
``camera.depth.visible_points``): ``ego_T_camera`` carries the global BEV
augmentation as the points do, pixels follow ``Calibration.project`` (intrinsics, then
``img_aug``), and feature pixel (i, j) of stride s covers input pixels [j s, (j + 1) s) x
[i s, (i + 1) s).

Where no camera painted a cell's neighbourhood the painter adds exactly zero (its convolutions
have no bias), and its last convolution starts at zero: a fusion model initialised from a LiDAR
model (``train.init_partial``) starts as that model, and a frame without cameras is encoded as
a LiDAR model would encode it.

Pixel supervision (PointPainting paints a segmentation network's scores; ``pixel_head``): a
1x1 head on the camera features predicts, per feature pixel, what the LiDAR point nearest the
camera there belongs to (background or one of the classes: the ground-truth box it lies in) and,
on objects, the box's yaw relative to the viewing ray as the image shows it (sin, cos; the
sine's sign turned where the view is mirrored: a BEV mirror without an image flip, or the
reverse). Trained by ``pixel_loss`` on the targets of ``pixel_targets`` (the same points and
geometry as the painting), its class probabilities are painted beside the features, and its
relative yaw, turned back into the BEV frame per point and camera (plus the ray's azimuth), as
the sin and cos of a heading: a car's lights say which way it faces, and the painting puts that
where the LiDAR sees the car.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perception.models.camera.depth import IGNORE, visible_in_batch
from perception.structures.grid import BEVGrid


def view_handedness(ego_T_camera: Tensor, img_aug: Tensor) -> Tensor:
    """(B, N) +1 where a camera's image shows the (augmented) scene as a rigid camera would,
    -1 where it shows its mirror image (a BEV mirror in ``ego_T_camera`` without an image flip
    in ``img_aug``, or the reverse)."""
    return torch.sign(torch.linalg.det(ego_T_camera[..., :3, :3].double())
                      * torch.linalg.det(img_aug[..., :2, :2].double())).float()


def pixel_targets(points: Sequence[Tensor], num_pasted: Tensor, gts: Sequence, *,
                  time_lag_col: int | None, intrinsics: Tensor, ego_T_camera: Tensor,
                  img_aug: Tensor, camera_mask: Tensor, feature_shape: tuple[int, int],
                  stride: int, min_depth: float = 0.5) -> tuple[Tensor, Tensor]:
    """Per feature pixel, what the nearest keyframe LiDAR point there belongs to.

    Args:
        points, num_pasted, time_lag_col, intrinsics, ego_T_camera, img_aug: as
            :func:`paint_points`. gts: B ``GroundTruth`` (boxes in the points' frame).
        camera_mask: (B, N) bool, the cameras to supervise.
        feature_shape: (h, w); stride: input pixels per feature pixel.
    Returns:
        classes (B, N, h, w) int64: 0 background, 1 + the class index of the box the point lies
        in, ``IGNORE`` where no point projects; yaw (B, N, 2, h, w) float32: sin and cos of that
        box's yaw minus the azimuth of the ray from the camera to the point, the sine times the
        view's handedness (zero off objects).
    """
    b_, n_ = camera_mask.shape
    h, w = feature_shape
    dev = intrinsics.device
    classes = torch.full((b_, n_ * h * w), IGNORE, dtype=torch.int64, device=dev)
    yaw = torch.zeros(b_, 2, n_ * h * w, dtype=torch.float32, device=dev)
    hand = view_handedness(ego_T_camera, img_aug)
    for b, cams, (p, k, j, pixel, _) in visible_in_batch(
            points, num_pasted, time_lag_col=time_lag_col, intrinsics=intrinsics,
            ego_T_camera=ego_T_camera, img_aug=img_aug, camera_mask=camera_mask, h=h, w=w,
            stride=stride, min_depth=min_depth, nearest_only=True):
        pixel = cams[k] * h * w + pixel % (h * w)          # index among all N cameras
        boxes = gts[b].boxes
        cls = torch.zeros(len(j), dtype=torch.int64, device=dev)
        if len(boxes):
            inside = boxes.points_in_boxes(p[j])                            # (M, K)
            hit = inside.any(0)
            box = inside.float().argmax(0)
            cls[hit] = gts[b].labels.to(dev)[box[hit]] + 1
            centre = ego_T_camera[b, cams[k], :2, 3].double()
            ray = p[j, :2].double() - centre
            azimuth = torch.atan2(ray[:, 1], ray[:, 0])
            rel = boxes.yaw.to(dev).double()[box] - azimuth
            rel = torch.where(hit, rel, torch.zeros_like(rel))
            hit_f = hit.to(torch.float32)
            yaw[b, 0, pixel] = (torch.sin(rel) * hand[b, cams[k]].double()).float() * hit_f
            yaw[b, 1, pixel] = torch.cos(rel).float() * hit_f
        classes[b, pixel] = cls
    return (classes.reshape(b_, n_, h, w),
            yaw.reshape(b_, 2, n_, h, w).permute(0, 2, 1, 3, 4).contiguous())


def pixel_loss(logits: Tensor, classes: Tensor, yaw: Tensor) -> Tensor:
    """Cross-entropy of the class logits on the pixels with a target plus the L1 error of the
    (sin, cos) yaw on the object pixels; 0 (with a graph) when no pixel has a target.

    Args:
        logits: (B, N, 1 + K + 2, h, w) the pixel head's output (classes, then sin and cos).
        classes, yaw: from :func:`pixel_targets`.
    """
    b, n, c, h, w = logits.shape
    flat = logits.reshape(b * n, c, h, w).float()
    cls = classes.reshape(b * n, h, w)
    if not (cls != IGNORE).any():
        return flat.sum() * 0.0
    loss = F.cross_entropy(flat[:, :-2], cls, ignore_index=IGNORE)
    obj = cls > 0
    if obj.any():
        pred = flat[:, -2:].permute(0, 2, 3, 1)[obj]                         # (P, 2)
        target = yaw.reshape(b * n, 2, h, w).permute(0, 2, 3, 1)[obj]
        loss = loss + F.l1_loss(pred, target)
    return loss


def paint_points(feats: Tensor, points: Sequence[Tensor], num_pasted: Tensor, *,
                 time_lag_col: int | None, intrinsics: Tensor, ego_T_camera: Tensor,
                 img_aug: Tensor, camera_mask: Tensor, stride: int, grid: BEVGrid,
                 yaw: Tensor | None = None, depth_tolerance: float = 1.0,
                 min_depth: float = 0.5) -> Tensor:
    """Per BEV cell, the mean camera feature of the LiDAR points in it, plus a coverage channel.

    Args:
        feats: (B, N, C, h, w) camera feature maps (rows of absent cameras unused).
        points: B tensors (N_b, C_p), ego frame (augmented like ``ego_T_camera``), x, y, z first.
        num_pasted: (B,) int, trailing rows of each cloud inserted by GT copy-paste (skipped).
        time_lag_col: column of the time lag (s); only rows with lag 0 are painted. None: every
            row is keyframe.
        intrinsics: (B, N, 3, 3). ego_T_camera: (B, N, 4, 4). img_aug: (B, N, 3, 3).
        camera_mask: (B, N) bool, the cameras that paint (present and used).
        stride: input pixels per feature pixel. grid: the BEV raster.
        yaw: optional (B, N, 2, h, w) sin and cos of a heading relative to the viewing ray, as
            the image shows it (``pixel_targets``' convention): each point takes it turned into
            the BEV frame (times the view's handedness, plus the ray's azimuth) as 2 more
            channels, after the features.
        depth_tolerance: metres behind the nearest point of its feature pixel a point may lie
            and still be painted by that camera.
        min_depth: points nearer the camera than this (metres) are not painted.
    Returns:
        (B, C (+ 2) + 1, H, W) float32: the mean over the (point, camera) pairs of each cell,
        and 1 where a cell has any (0 elsewhere, with zero features).
    """
    b_, n_, c, h, w = feats.shape
    H, W = grid.shape
    c_out = c + (0 if yaw is None else 2)
    sums = feats.new_zeros((b_, c_out, H * W), dtype=torch.float32)
    counts = feats.new_zeros((b_, H * W), dtype=torch.float32)
    hand = view_handedness(ego_T_camera, img_aug) if yaw is not None else None
    for b, cams, (p, k, j, pixel, _) in visible_in_batch(
            points, num_pasted, time_lag_col=time_lag_col, intrinsics=intrinsics,
            ego_T_camera=ego_T_camera, img_aug=img_aug, camera_mask=camera_mask, h=h, w=w,
            stride=stride, min_depth=min_depth, depth_tolerance=depth_tolerance):
        inside = grid.in_range(p[j])
        k, j, pixel = k[inside], j[inside], pixel[inside]
        sampled = feats[b, cams].permute(0, 2, 3, 1).reshape(-1, c)[pixel].float()   # (K, C)
        if yaw is not None:
            sc = yaw[b, cams].permute(0, 2, 3, 1).reshape(-1, 2)[pixel].double()
            rel = torch.atan2(sc[:, 0] * hand[b, cams[k]].double(), sc[:, 1])
            ray = p[j, :2].double() - ego_T_camera[b, cams[k], :2, 3].double()
            heading = rel + torch.atan2(ray[:, 1], ray[:, 0])
            sampled = torch.cat([sampled, torch.stack([torch.sin(heading), torch.cos(heading)],
                                                      1).float()], 1)
        rc = grid.xy_to_cell(p[j, :2])
        cell = rc[:, 0] * W + rc[:, 1]
        sums[b].index_add_(1, cell, sampled.t())
        counts[b].index_add_(0, cell, torch.ones_like(cell, dtype=torch.float32))
    covered = (counts > 0).to(torch.float32)
    mean = sums / counts.clamp(min=1)[:, None]
    return torch.cat([mean, covered[:, None]], dim=1).reshape(b_, c_out + 1, H, W)


class PointPainter(nn.Module):
    """Camera features at the LiDAR points -> a map to add to the LiDAR BEV map.

    Args:
        grid: the BEV raster. in_channels: C of the camera feature maps (the FPN's).
        hidden_channels: width of the painter's convolutions.
        out_channels: the LiDAR BEV map's channels.
        stride: input pixels per camera feature pixel.
        num_classes: > 0 builds the pixel head (``pixel_head``: 1 + num_classes class logits,
            then sin and cos of the relative yaw), whose class probabilities and BEV heading
            are painted too; 0: the features only.
        depth_tolerance: see :func:`paint_points`.
    Forward: the arguments of :func:`paint_points` without ``stride``/``grid``/``yaw`` ->
    (B, out_channels, H, W), exactly zero at cells with no painted cell among their 3 x 3
    neighbours, and everywhere at initialisation; and the pixel head's (B, N, 1 + K + 2, h, w)
    logits (None without it).
    """

    def __init__(self, *, grid: BEVGrid, in_channels: int, hidden_channels: int,
                 out_channels: int, stride: int, num_classes: int = 0,
                 depth_tolerance: float = 1.0):
        super().__init__()
        self.grid, self.stride, self.depth_tolerance = grid, stride, depth_tolerance
        self.pixel_head = nn.Conv2d(in_channels, num_classes + 3, 1) if num_classes else None
        painted = in_channels + (num_classes + 3 if num_classes else 0)
        # No biases and no normalisation: zero in, zero out (see the module docstring).
        self.net = nn.Sequential(
            nn.Conv2d(painted + 1, hidden_channels, 1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1, bias=False),
            nn.ReLU(inplace=True))
        self.out = nn.Conv2d(hidden_channels, out_channels, 1, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, feats: Tensor, points: Sequence[Tensor], num_pasted: Tensor, *,
                time_lag_col: int | None, intrinsics: Tensor, ego_T_camera: Tensor,
                img_aug: Tensor, camera_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        logits = yaw = None
        if self.pixel_head is not None:
            b, n, c, h, w = feats.shape
            logits = self.pixel_head(feats.reshape(b * n, c, h, w)).reshape(b, n, -1, h, w)
            probs = logits[:, :, :-2].float().softmax(dim=2)
            yaw = F.normalize(logits[:, :, -2:].float(), dim=2)
            feats = torch.cat([feats.float(), probs], dim=2)
        painted = paint_points(feats, points, num_pasted, time_lag_col=time_lag_col,
                               intrinsics=intrinsics, ego_T_camera=ego_T_camera,
                               img_aug=img_aug, camera_mask=camera_mask, stride=self.stride,
                               grid=self.grid, yaw=yaw, depth_tolerance=self.depth_tolerance)
        x = painted.to(self.out.weight.dtype)
        return self.out(self.net(x)), logits
