"""One synchronized multi-sensor sample: :class:`Frame` and its parts.

Frames:
- "ego" (unqualified) is the ego-vehicle frame at the LiDAR keyframe timestamp of the sample: every
  point, box and ``ego_T_sensor`` of a Frame is expressed in it;
- "global" is the map frame; ``Frame.global_T_ego`` links the two.

Dtypes: points and boxes float32; 4x4 transforms float64 (global poses carry ~1e3 m translations,
which float32 would round to ~1e-4 m, and transforms are composed several times); intrinsics and
the image augmentation matrix float64 too, for one rule. ``Batch`` casts what models consume.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from perception.structures.instances import GroundTruth

LIDAR_FIELDS = ("x", "y", "z", "intensity", "time_lag")
RADAR_FIELDS = (
    "x", "y", "z", "rcs", "vx_comp", "vy_comp", "time_lag",
    "vx", "vy", "dyn_prop", "ambig_state", "invalid_state", "is_quality_valid",
)


def _transform(x, name: str, shape: tuple[int, ...]) -> Tensor:
    t = torch.as_tensor(x, dtype=torch.float64)
    if t.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    return t


@dataclass
class Calibration:
    """Where a sensor is and how it projects.

    Attributes:
        ego_T_sensor: (4, 4) float64, maps sensor-frame points into the Frame's ego frame (the ego
            at the LiDAR keyframe time). For a sensor stamped at another time (cameras, radars)
            this composes ``ego_T_global @ global_T_ego(t_sensor) @ ego(t_sensor)_T_sensor``, so
            that projecting ego-frame geometry with it accounts for the ego motion in between.
        intrinsics: (3, 3) float64 pinhole matrix (pixels) for cameras, None otherwise.
        img_aug: (3, 3) float64 matrix applied to pixel coordinates after ``intrinsics`` (resize,
            crop, flip done by augmentation); identity when the image is as recorded.
        mount_T_sensor: (4, 4) float64, the static mounting extrinsic (``calibrated_sensor``:
            sensor into the ego frame at the sensor's *own* timestamp), or None when unknown.
    """

    ego_T_sensor: Tensor
    intrinsics: Tensor | None = None
    img_aug: Tensor = field(default_factory=lambda: torch.eye(3, dtype=torch.float64))
    mount_T_sensor: Tensor | None = None

    def __post_init__(self):
        self.ego_T_sensor = _transform(self.ego_T_sensor, "ego_T_sensor", (4, 4))
        if self.intrinsics is not None:
            self.intrinsics = _transform(self.intrinsics, "intrinsics", (3, 3))
        self.img_aug = _transform(self.img_aug, "img_aug", (3, 3))
        if self.mount_T_sensor is not None:
            self.mount_T_sensor = _transform(self.mount_T_sensor, "mount_T_sensor", (4, 4))

    @property
    def sensor_T_ego(self) -> Tensor:
        """(4, 4) float64 inverse of ``ego_T_sensor``."""
        return torch.linalg.inv(self.ego_T_sensor)

    def project(self, points_ego: Tensor) -> tuple[Tensor, Tensor]:
        """Project ego-frame points into the (augmented) image.

        Args:
            points_ego: (P, 3+) metres in the Frame's ego frame.
        Returns:
            uv: (P, 2) float64 pixel coordinates; depth: (P,) float64 metres along the optical
            axis (<= 0 means behind the camera, where uv is meaningless).
        """
        if self.intrinsics is None:
            raise ValueError("project() needs a camera calibration (intrinsics is None)")
        p = points_ego[:, :3].to(torch.float64)
        T = self.sensor_T_ego
        cam = p @ T[:3, :3].T + T[:3, 3]
        depth = cam[:, 2]
        pix = cam @ self.intrinsics.T
        uv1 = torch.cat([pix[:, :2] / pix[:, 2:3], torch.ones_like(depth)[:, None]], dim=1)
        uv = uv1 @ self.img_aug.T
        return uv[:, :2] / uv[:, 2:3], depth

    def to(self, device) -> "Calibration":
        return Calibration(
            ego_T_sensor=self.ego_T_sensor.to(device),
            intrinsics=None if self.intrinsics is None else self.intrinsics.to(device),
            img_aug=self.img_aug.to(device),
            mount_T_sensor=None if self.mount_T_sensor is None else self.mount_T_sensor.to(device),
        )


@dataclass
class SensorSample:
    """One sensor's data in a Frame.

    Attributes:
        channel: nuScenes channel name, e.g. ``"LIDAR_TOP"``, ``"RADAR_FRONT"``, ``"CAM_FRONT"``.
        data: point sensors: (N, C) float32 points already in the Frame's ego frame (columns named
            by ``fields``); cameras: (3, H, W) uint8 RGB image.
        calib: the sensor's :class:`Calibration`.
        timestamp: µs, the sensor's own (keyframe) timestamp.
        num_sweeps: point sensors: number of sweeps actually aggregated (missing sweep files are
            skipped, so this may be smaller than asked); 1 for cameras.
        fields: column names of ``data`` for point sensors (e.g. ``LIDAR_FIELDS``); () for images.
        token: nuScenes sample_data token of the keyframe ("" when not from nuScenes).
        num_pasted: point sensors: the last ``num_pasted`` rows of ``data`` were inserted by
            augmentation (GT copy-paste), not measured: other sensors do not see them.
    """

    channel: str
    data: Tensor
    calib: Calibration
    timestamp: int
    num_sweeps: int = 1
    fields: tuple[str, ...] = ()
    token: str = ""
    num_pasted: int = 0

    def __post_init__(self):
        if self.is_camera:
            if self.data.ndim != 3 or self.data.shape[0] != 3:
                raise ValueError(f"{self.channel}: image must be (3, H, W), got {tuple(self.data.shape)}")
        else:
            if self.data.ndim != 2:
                raise ValueError(f"{self.channel}: points must be (N, C), got {tuple(self.data.shape)}")
            if self.fields and len(self.fields) != self.data.shape[1]:
                raise ValueError(
                    f"{self.channel}: {len(self.fields)} field names for {self.data.shape[1]} columns"
                )

    def __repr__(self) -> str:
        return (f"SensorSample({self.channel}, data={tuple(self.data.shape)} {self.data.dtype}, "
                f"timestamp={self.timestamp}, num_sweeps={self.num_sweeps})")

    @property
    def is_camera(self) -> bool:
        return self.calib.intrinsics is not None

    @property
    def points(self) -> Tensor:
        """(N, C) float32 points (point sensors only)."""
        if self.is_camera:
            raise AttributeError(f"{self.channel} is a camera: use .data / .image")
        return self.data

    @property
    def image(self) -> Tensor:
        """(3, H, W) uint8 RGB image (cameras only)."""
        if not self.is_camera:
            raise AttributeError(f"{self.channel} is not a camera: use .points")
        return self.data

    def column(self, name: str) -> Tensor:
        """(N,) the named column of a point cloud."""
        return self.points[:, self.fields.index(name)]

    def to(self, device) -> "SensorSample":
        return replace(self, data=self.data.to(device), calib=self.calib.to(device))


@dataclass
class Frame:
    """Everything known about one sample (one LiDAR keyframe and the sensors around it).

    Attributes:
        token: sample token.
        timestamp: µs, the LiDAR keyframe timestamp (the sample's time).
        scene_token, scene_name: the scene the sample belongs to.
        global_T_ego: (4, 4) float64 ego pose at ``timestamp``.
        lidar: LiDAR sample, or None when the frame has no LiDAR.
        radars: channel -> radar sample (missing radars are absent keys).
        cameras: channel -> camera sample (missing cameras are absent keys).
        gt: annotations, or None (test sets, online use).
    """

    token: str
    timestamp: int
    global_T_ego: Tensor
    scene_token: str = ""
    scene_name: str = ""
    lidar: SensorSample | None = None
    radars: dict[str, SensorSample] = field(default_factory=dict)
    cameras: dict[str, SensorSample] = field(default_factory=dict)
    gt: GroundTruth | None = None

    def __post_init__(self):
        self.global_T_ego = _transform(self.global_T_ego, "global_T_ego", (4, 4))

    def __repr__(self) -> str:
        n_gt = "None" if self.gt is None else len(self.gt)
        return (f"Frame(token={self.token!r}, timestamp={self.timestamp}, scene={self.scene_name!r}, "
                f"lidar={self.lidar!r}, radars={sorted(self.radars)}, cameras={sorted(self.cameras)}, "
                f"gt={n_gt})")

    @property
    def modalities(self) -> frozenset[str]:
        """Subset of {"lidar", "radar", "camera"} present in this frame."""
        present = set()
        if self.lidar is not None:
            present.add("lidar")
        if self.radars:
            present.add("radar")
        if self.cameras:
            present.add("camera")
        return frozenset(present)

    def to(self, device) -> "Frame":
        return replace(
            self,
            global_T_ego=self.global_T_ego.to(device),
            lidar=None if self.lidar is None else self.lidar.to(device),
            radars={k: v.to(device) for k, v in self.radars.items()},
            cameras={k: v.to(device) for k, v in self.cameras.items()},
            gt=None if self.gt is None else self.gt.to(device),
        )
