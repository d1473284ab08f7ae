"""Batch: frames collated into the tensors models consume.

Point clouds have different lengths per frame, so they stay **lists** of (N_b, C) tensors (one per
frame); :func:`points_with_batch_index` gives the concatenated (sum N_b, 1 + C) form, column 0 the
batch index, which voxelization and scatter ops prefer. Images and calibrations are stacked over
the fixed camera order ``CAMERA_CHANNELS``.

A sensor missing from a frame is never silently zero-filled: its slot is zeros (identity
transforms) *and* the matching mask is False, so fusion can mask it out.

Dtypes: images uint8, points/boxes float32, ``intrinsics``/``ego_T_sensor``/``img_aug`` float32
(what the camera lift consumes), ``global_T_ego`` float64 (absolute poses).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch import Tensor

from perception.structures.frame import Frame
from perception.structures.instances import GroundTruth
from perception.structures.labels import CAMERA_CHANNELS, RADAR_CHANNELS


@dataclass
class Batch:
    """B collated frames.

    Attributes:
        tokens: B sample tokens.
        timestamps: (B,) int64 µs.
        global_T_ego: (B, 4, 4) float64.
        lidar_points: B tensors (N_b, C_lidar) float32, ego frame; (0, C) where a frame has no LiDAR.
        lidar_mask: (B,) bool, frame has LiDAR.
        lidar_num_pasted: (B,) int64, trailing rows of each LiDAR cloud inserted by GT copy-paste
            (``SensorSample.num_pasted``); the cameras do not see them.
        radar_points: B tensors (R_b, C_radar) float32: all radar channels of the frame
            concatenated in ``RADAR_CHANNELS`` order, ego frame.
        radar_mask: (B,) bool, frame has at least one radar.
        images: (B, N_cam, 3, H, W) uint8 in ``camera_channels`` order, or None when no frame has
            cameras.
        camera_mask: (B, N_cam) bool, camera present (None iff images is None).
        intrinsics: (B, N_cam, 3, 3) float32 (identity for missing cameras), or None.
        ego_T_camera: (B, N_cam, 4, 4) float32 camera -> keyframe ego (identity if missing), or None.
        img_aug: (B, N_cam, 3, 3) float32 image-space augmentation, or None.
        camera_channels: names of the N_cam camera slots.
        lidar_fields, radar_fields: column names of the point tensors.
        gt: B ground truths (None entries for frames without annotations).
    """

    tokens: list[str]
    timestamps: Tensor
    global_T_ego: Tensor
    lidar_points: list[Tensor]
    lidar_mask: Tensor
    radar_points: list[Tensor]
    radar_mask: Tensor
    lidar_num_pasted: Tensor | None = None
    images: Tensor | None = None
    camera_mask: Tensor | None = None
    intrinsics: Tensor | None = None
    ego_T_camera: Tensor | None = None
    img_aug: Tensor | None = None
    camera_channels: tuple[str, ...] = CAMERA_CHANNELS
    lidar_fields: tuple[str, ...] = ()
    radar_fields: tuple[str, ...] = ()
    gt: list[GroundTruth | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        def mv(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            timestamps=mv(self.timestamps),
            global_T_ego=mv(self.global_T_ego),
            lidar_points=[mv(p) for p in self.lidar_points],
            lidar_mask=mv(self.lidar_mask),
            lidar_num_pasted=mv(self.lidar_num_pasted),
            radar_points=[mv(p) for p in self.radar_points],
            radar_mask=mv(self.radar_mask),
            images=mv(self.images),
            camera_mask=mv(self.camera_mask),
            intrinsics=mv(self.intrinsics),
            ego_T_camera=mv(self.ego_T_camera),
            img_aug=mv(self.img_aug),
            gt=[None if g is None else g.to(device) for g in self.gt],
        )


def host_to_device(t: Tensor, device) -> Tensor:
    """``t.to(device)`` without making the host wait for the GPU: a CPU tensor goes to CUDA
    through pinned memory, asynchronously (a copy from ordinary memory first waits for every
    kernel queued before it). Anything else is a plain ``.to``."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def points_with_batch_index(points: Sequence[Tensor]) -> Tensor:
    """Concatenate per-frame clouds, prepending the frame index.

    Args:
        points: B tensors (N_b, C).
    Returns:
        (sum N_b, 1 + C) tensor of the points' dtype; column 0 is the batch index b.
    """
    if not points:
        raise ValueError("points_with_batch_index needs at least one frame")
    idx = torch.cat([
        torch.full((len(p), 1), b, dtype=p.dtype, device=p.device) for b, p in enumerate(points)
    ])
    return torch.cat([idx, torch.cat(list(points))], dim=1)


def _common_fields(frames: Sequence[Frame], get) -> tuple[str, ...]:
    names = {get(f) for f in frames} - {None}
    if len(names) > 1:
        raise ValueError(f"frames disagree on point columns: {sorted(names)}")
    return names.pop() if names else ()


def collate(frames: Sequence[Frame], camera_channels: Sequence[str] = CAMERA_CHANNELS) -> Batch:
    """Collate frames into a :class:`Batch` (see the module docstring for layout and masks).

    Args:
        frames: B frames; images of all present cameras must share one (H, W) (resize first).
        camera_channels: camera slot order.
    """
    if not frames:
        raise ValueError("collate needs at least one frame")
    B = len(frames)
    camera_channels = tuple(camera_channels)

    lidar_fields = _common_fields(frames, lambda f: f.lidar.fields if f.lidar is not None else None)
    radar_fields = _common_fields(
        frames, lambda f: next(iter(f.radars.values())).fields if f.radars else None
    )
    n_lidar_cols = len(lidar_fields) or 5
    n_radar_cols = len(radar_fields) or 7

    lidar_points, radar_points = [], []
    for f in frames:
        lidar_points.append(
            f.lidar.points if f.lidar is not None else torch.zeros(0, n_lidar_cols)
        )
        radars = [f.radars[ch].points for ch in RADAR_CHANNELS if ch in f.radars]
        radars += [s.points for ch, s in f.radars.items() if ch not in RADAR_CHANNELS]
        radar_points.append(torch.cat(radars) if radars else torch.zeros(0, n_radar_cols))

    images = camera_mask = intrinsics = ego_T_camera = img_aug = None
    if any(f.cameras for f in frames):
        sizes = {tuple(s.data.shape) for f in frames for s in f.cameras.values()}
        if len(sizes) != 1:
            raise ValueError(f"cannot stack images of different sizes {sorted(sizes)}: resize first")
        C, H, W = sizes.pop()
        N = len(camera_channels)
        images = torch.zeros(B, N, C, H, W, dtype=torch.uint8)
        camera_mask = torch.zeros(B, N, dtype=torch.bool)
        intrinsics = torch.eye(3).repeat(B, N, 1, 1)
        ego_T_camera = torch.eye(4).repeat(B, N, 1, 1)
        img_aug = torch.eye(3).repeat(B, N, 1, 1)
        for b, f in enumerate(frames):
            for n, ch in enumerate(camera_channels):
                s = f.cameras.get(ch)
                if s is None:
                    continue
                images[b, n] = s.data
                camera_mask[b, n] = True
                intrinsics[b, n] = s.calib.intrinsics.float()
                ego_T_camera[b, n] = s.calib.ego_T_sensor.float()
                img_aug[b, n] = s.calib.img_aug.float()

    return Batch(
        tokens=[f.token for f in frames],
        timestamps=torch.tensor([f.timestamp for f in frames], dtype=torch.int64),
        global_T_ego=torch.stack([f.global_T_ego for f in frames]),
        lidar_points=lidar_points,
        lidar_mask=torch.tensor([f.lidar is not None for f in frames]),
        lidar_num_pasted=torch.tensor([f.lidar.num_pasted if f.lidar is not None else 0
                                       for f in frames], dtype=torch.int64),
        radar_points=radar_points,
        radar_mask=torch.tensor([bool(f.radars) for f in frames]),
        images=images,
        camera_mask=camera_mask,
        intrinsics=intrinsics,
        ego_T_camera=ego_T_camera,
        img_aug=img_aug,
        camera_channels=camera_channels,
        lidar_fields=lidar_fields,
        radar_fields=radar_fields,
        gt=[f.gt for f in frames],
    )
