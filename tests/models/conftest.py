"""Tiny synthetic batches and configs for the model tests (no dataset needed)."""
from __future__ import annotations

import math

import pytest
import torch

from perception.models.config import (
    CameraConfig,
    FusionConfig,
    HeadConfig,
    LidarConfig,
    ModelConfig,
    RadarConfig,
)
from perception.models.heads import CenterHead, assign_targets
from perception.models.outputs import HeadOutput
from perception.structures import Boxes3D, GroundTruth
from perception.structures.batch import Batch
from perception.structures.frame import LIDAR_FIELDS, RADAR_FIELDS
from perception.structures.grid import BEVGrid
from perception.structures.labels import DETECTION_CLASSES



def camera_rig(n_cams: int, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras 1.5 m up, evenly spaced in yaw, pinhole with a 90 deg horizontal field of view.

    Returns intrinsics (N, 3, 3) and ego_T_camera (N, 4, 4) (camera: x right, y down, z forward).
    """
    h, w = image_size
    f = w / 2
    K = torch.tensor([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]]).repeat(n_cams, 1, 1)
    Ts = []
    for i in range(n_cams):
        yaw = 2 * math.pi * i / n_cams
        c, s = math.cos(yaw), math.sin(yaw)
        fwd, right, down = torch.tensor([c, s, 0.0]), torch.tensor([s, -c, 0.0]), torch.tensor([0, 0, -1.0])
        T = torch.eye(4)
        T[:3, 0], T[:3, 1], T[:3, 2] = right, down, fwd
        T[:3, 3] = torch.tensor([0.5 * c, 0.5 * s, 1.5])
        Ts.append(T)
    return K, torch.stack(Ts)


def augmented_rig() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three cameras of 360x640 seen through a resize + crop (one mirrored), with a global BEV
    augmentation (rotation, scale, mirror, shift) folded into ego_T_camera as training does.
    Returns intrinsics (1, 3, 3, 3), ego_T_camera (1, 3, 4, 4) and img_aug (1, 3, 3, 3)."""
    K, T = camera_rig(3, (360, 640))
    aug = torch.tensor([[0.55, 0.0, 0.0], [0.0, 0.55, -70.0], [0.0, 0.0, 1.0]]).repeat(3, 1, 1)
    aug[1] = torch.tensor([[-1.0, 0.0, 352.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ aug[1]
    c, s = math.cos(0.3), math.sin(0.3)
    M = torch.tensor([[c, -s, 0.0, 1.0], [s, c, 0.0, -2.0], [0.0, 0.0, 1.0, 0.1], [0, 0, 0, 1.0]])
    M[:3, :3] *= 1.04
    M[1, :3] *= -1
    return K[None], (M @ T)[None], aug[None]


def random_gt(n: int, extent: float, gen: torch.Generator) -> GroundTruth:
    xy = (torch.rand(n, 2, generator=gen) * 2 - 1) * extent * 0.8
    size = torch.tensor([4.5, 1.9, 1.6]) * (0.8 + 0.4 * torch.rand(n, 3, generator=gen))
    yaw = (torch.rand(n, 1, generator=gen) * 2 - 1) * math.pi
    vel = torch.randn(n, 2, generator=gen) * 3
    z = size[:, 2:3] / 2 - 1.8
    boxes = torch.cat([xy, z, size, yaw, vel], 1)
    labels = torch.randint(0, 10, (n,), generator=gen)
    attrs = torch.full((n,), -1, dtype=torch.int64)
    attrs[labels <= 4] = 5  # vehicle.moving
    return GroundTruth(Boxes3D(boxes), labels, attributes=attrs)


def make_batch(*, grid: BEVGrid, batch_size: int = 1, n_cams: int = 2,
               image_size: tuple[int, int] = (32, 64), boxes_per_frame: int = 4,
               lidar_per_box: int = 150, lidar_ground: int = 500, seed: int = 0) -> Batch:
    """Frames whose LiDAR/radar points actually come from the GT boxes (so overfitting can work)."""
    gen = torch.Generator().manual_seed(seed)
    extent = min(grid.x_range[1], grid.y_range[1])
    gts, lidar, radar = [], [], []
    for _ in range(batch_size):
        gt = random_gt(boxes_per_frame, extent, gen)
        b = gt.boxes.tensor
        local = (torch.rand(boxes_per_frame, lidar_per_box, 3, generator=gen) - 0.5) * b[:, None, 3:6]
        c, s = torch.cos(b[:, 6])[:, None], torch.sin(b[:, 6])[:, None]
        pts = torch.stack([c * local[..., 0] - s * local[..., 1] + b[:, None, 0],
                           s * local[..., 0] + c * local[..., 1] + b[:, None, 1],
                           local[..., 2] + b[:, None, 2]], -1).reshape(-1, 3)
        ground = torch.cat([(torch.rand(lidar_ground, 2, generator=gen) * 2 - 1) * extent,
                            torch.full((lidar_ground, 1), -1.8)], 1)
        xyz = torch.cat([pts, ground])
        extra = torch.rand(len(xyz), len(LIDAR_FIELDS) - 3, generator=gen)
        lidar.append(torch.cat([xyz, extra], 1))
        r = torch.zeros(boxes_per_frame * 3, len(RADAR_FIELDS))
        rb = b.repeat_interleave(3, 0)
        r[:, 0:3] = rb[:, 0:3] + torch.randn(len(rb), 3, generator=gen) * 0.3
        r[:, 3] = 10.0  # rcs
        r[:, 4:6] = rb[:, 7:9]  # compensated velocity (full vector: easy mode for tests)
        radar.append(r)
        gts.append(gt)
    K, T = camera_rig(n_cams, image_size)
    images = torch.randint(0, 255, (batch_size, n_cams, 3, *image_size), generator=gen,
                           dtype=torch.uint8)
    return Batch(
        tokens=[f"t{i}" for i in range(batch_size)],
        timestamps=torch.arange(batch_size, dtype=torch.int64),
        global_T_ego=torch.eye(4, dtype=torch.float64).repeat(batch_size, 1, 1),
        lidar_points=lidar, lidar_mask=torch.ones(batch_size, dtype=torch.bool),
        radar_points=radar, radar_mask=torch.ones(batch_size, dtype=torch.bool),
        images=images, camera_mask=torch.ones(batch_size, n_cams, dtype=torch.bool),
        intrinsics=K.repeat(batch_size, 1, 1, 1), ego_T_camera=T.repeat(batch_size, 1, 1, 1),
        img_aug=torch.eye(3).repeat(batch_size, n_cams, 1, 1),
        camera_channels=tuple(f"CAM{i}" for i in range(n_cams)),
        lidar_fields=LIDAR_FIELDS, radar_fields=RADAR_FIELDS, gt=gts)


def frame_fields(batch: Batch, i: int) -> dict:
    """The fields of ``batch`` that ``dataclasses.replace`` needs to make frame ``i`` a batch
    of its own."""
    one = slice(i, i + 1)
    return dict(tokens=batch.tokens[one], timestamps=batch.timestamps[one],
                global_T_ego=batch.global_T_ego[one], lidar_points=batch.lidar_points[one],
                lidar_mask=batch.lidar_mask[one], radar_points=batch.radar_points[one],
                radar_mask=batch.radar_mask[one], images=batch.images[one],
                camera_mask=batch.camera_mask[one], intrinsics=batch.intrinsics[one],
                ego_T_camera=batch.ego_T_camera[one], img_aug=batch.img_aug[one],
                gt=batch.gt[one])


TINY_GRID = BEVGrid(x_range=(-12.8, 12.8), y_range=(-12.8, 12.8), z_range=(-3.0, 1.0),
                    cell_size=0.8, voxel_z=4.0)


def tiny_config(modalities=("camera", "lidar", "radar")) -> ModelConfig:
    return ModelConfig(
        grid=TINY_GRID, modalities=tuple(modalities),
        camera=CameraConfig(image_size=(32, 64), stem_channels=8, stage_channels=(8, 16, 16),
                            fpn_channels=16, feature_stride=8, depth_bins=(1.0, 17.0, 1.0),
                            context_channels=8, out_channels=16),
        lidar=LidarConfig(voxel_z=0.5, channels=(8, 16), out_channels=16, max_voxels=5000),
        radar=RadarConfig(hidden_channels=(16,), out_channels=16),
        fusion=FusionConfig(channels=16, heads=2, context_blocks=1, modality_dropout=0.0),
        head=HeadConfig(shared_channels=16, max_objects=32, top_k=50),
    )


def ideal_outputs(gt: GroundTruth, grid: BEVGrid, class_groups, vx_code_shift: float = 0.0,
                  half_turn: tuple[bool, ...] | None = None) -> tuple[HeadOutput, ...]:
    """Head maps built from the targets of one frame: peaks at the centres, the regression and
    attribute codes there (plus ``vx_code_shift`` on the vx code everywhere); ``half_turn``:
    per group, the half-turn heading code (``CenterHead.half_turn``)."""
    targets = assign_targets([gt], grid=grid, classes=DETECTION_CLASSES, class_groups=class_groups,
                             min_overlap=0.1, min_radius=2, max_objects=16, half_turn=half_turn)
    outs = []
    for t in targets:
        heat = torch.where(t.heatmap == 1, 10.0, -10.0 + 5 * t.heatmap)
        reg = torch.zeros(1, 10, grid.height * grid.width)
        attr = torch.zeros(1, 8, grid.height * grid.width)
        n = int(t.mask.sum())
        reg[0, :, t.index[0, :n]] = t.regression[0, :n].T
        reg[0, 8] += vx_code_shift
        valid_attr = t.attribute[0, :n] >= 0
        attr[0, t.attribute[0, :n][valid_attr], t.index[0, :n][valid_attr]] = 5.0
        outs.append(HeadOutput(heat, reg.view(1, 10, *grid.shape), attr.view(1, 8, *grid.shape)))
    return tuple(outs)


def small_head(grid: BEVGrid, class_groups, half_turn: tuple[str, ...] = (),
               refine_window: dict[str, float] | None = None) -> CenterHead:
    """An 8-channel CenterHead (score threshold 0.3) for decoding hand-made maps."""
    return CenterHead(in_channels=8, grid=grid, classes=DETECTION_CLASSES,
                      class_groups=class_groups, shared_channels=8, head_channels=8,
                      min_overlap=0.1, min_radius=2, max_objects=16, heatmap_weight=1.0,
                      regression_weight=0.25, attribute_weight=0.2, code_weights=(1.0,) * 10,
                      score_threshold=0.3, top_k=100, max_detections=50,
                      nms_radius=(2.0, 3.5, 3.2, 1.0, 0.9, 0.4), half_turn=half_turn,
                      refine_window=refine_window)


@pytest.fixture
def tiny_batch() -> Batch:
    return make_batch(grid=TINY_GRID, batch_size=2)


class Kit:
    """The helpers above, handed to tests as the ``kit`` fixture (tests are imported with
    ``--import-mode=importlib``, so they cannot import this conftest as a module)."""

    grid = TINY_GRID
    make_batch = staticmethod(make_batch)
    frame_fields = staticmethod(frame_fields)
    tiny_config = staticmethod(tiny_config)
    camera_rig = staticmethod(camera_rig)
    augmented_rig = staticmethod(augmented_rig)
    ideal_outputs = staticmethod(ideal_outputs)
    small_head = staticmethod(small_head)


@pytest.fixture
def kit() -> Kit:
    return Kit()
