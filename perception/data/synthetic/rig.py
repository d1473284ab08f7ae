"""The synthetic sensor rig: where the 12 nuScenes sensors sit on the ego vehicle.

Frames follow nuScenes (see docs/dev/synthetic_contract.md):

- ego frame: origin at the rear-axle centre on the ground, x forward, y left, z up;
- LIDAR_TOP: x right, y forward, z up, on the roof at ~(0.94, 0, 1.84) m;
- cameras: x right, y down, z along the optical axis (OpenCV), 6 around the roof;
- radars: x along the boresight, y left, z up; front bumper, front corners, rear corners.

Mounting yaws follow the real nuScenes calibration: the cameras at 0, -55, -110, 180, 110, 55
degrees; RADAR_FRONT at 0, the front corner radars looking sideways (+-90), the rear corner radars
looking backwards and slightly outwards (+-175), which is how the nuScenes car is calibrated.

Each scene gets its own calibration (``build_rig`` with a scene rng): a few millimetres and a
few tenths of a degree of jitter and a ~1 % focal-length spread, like the per-log calibration of
the real fleet, so that nothing downstream can rely on one exact rig.

The calibrated_sensor record (translation, rotation quaternion [w, x, y, z], intrinsics) is the
truth: ``SensorCalib.ego_T_sensor`` is computed back from the quaternion exactly as the devkit
does (``Quaternion(rotation).rotation_matrix``), so the sensor models see the very transform the
tables describe.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyquaternion import Quaternion

LIDAR_CHANNEL = "LIDAR_TOP"
CAMERA_CHANNELS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK",
                   "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
RADAR_CHANNELS = ("RADAR_FRONT", "RADAR_FRONT_LEFT", "RADAR_FRONT_RIGHT",
                  "RADAR_BACK_LEFT", "RADAR_BACK_RIGHT")
ALL_CHANNELS = (LIDAR_CHANNEL,) + CAMERA_CHANNELS + RADAR_CHANNELS

# Nominal mounting: channel -> (translation (m) in the ego frame, yaw (deg), pitch (deg), hfov (deg)).
# Positions are those of the nuScenes car to within a few centimetres. Camera pitch: the real
# cameras look very slightly down. hfov is 0 for non-cameras.
_LIDAR_MOUNT = ((0.943713, 0.0, 1.84023), -90.0)
_CAMERA_MOUNTS = {
    "CAM_FRONT": ((1.70, 0.016, 1.511), 0.0, 70.0),
    "CAM_FRONT_RIGHT": ((1.551, -0.493, 1.496), -55.0, 70.0),
    "CAM_BACK_RIGHT": ((1.015, -0.481, 1.562), -110.0, 70.0),
    # The real CAM_BACK has a wider lens (fx ~ 809 px at 1600 px width vs ~1260 for the others).
    "CAM_BACK": ((0.028, 0.003, 1.579), 180.0, 110.0),
    "CAM_BACK_LEFT": ((1.036, 0.485, 1.591), 110.0, 70.0),
    "CAM_FRONT_LEFT": ((1.524, 0.495, 1.509), 55.0, 70.0),
}
_CAMERA_PITCH_DEG = 0.5
_RADAR_MOUNTS = {
    "RADAR_FRONT": ((3.412, 0.0, 0.50), 0.0),
    "RADAR_FRONT_LEFT": ((2.422, 0.800, 0.78), 90.0),
    "RADAR_FRONT_RIGHT": ((2.422, -0.800, 0.77), -90.0),
    "RADAR_BACK_LEFT": ((-0.562, 0.628, 0.53), 175.0),
    "RADAR_BACK_RIGHT": ((-0.562, -0.618, 0.53), -175.0),
}

# Calibration jitter (1 sigma) at jitter=1.0: translation (m), angles (deg), focal (relative),
# principal point (fraction of the image size).
_JITTER_T = 0.005
_JITTER_ANGLE = 0.2
_JITTER_FOCAL = 0.01
_JITTER_PP = 0.005


@dataclass(frozen=True)
class SensorCalib:
    """One sensor's calibration, as in a calibrated_sensor record.

    channel:      nuScenes channel name, e.g. "CAM_FRONT"
    modality:     "lidar" | "camera" | "radar"
    translation:  (3,) float64, sensor origin in the ego frame, metres
    rotation:     (4,) float64, unit quaternion [w, x, y, z] rotating sensor-frame vectors into the ego frame
    intrinsics:   (3, 3) float64 camera matrix (pixels) or None for non-cameras
    width, height: image size in pixels (0 for non-cameras)
    """

    channel: str
    modality: str
    translation: np.ndarray
    rotation: np.ndarray
    intrinsics: np.ndarray | None = None
    width: int = 0
    height: int = 0

    @property
    def ego_T_sensor(self) -> np.ndarray:
        """(4, 4) float64: maps sensor-frame points into the ego frame (devkit convention)."""
        out = np.eye(4)
        out[:3, :3] = Quaternion(self.rotation).rotation_matrix
        out[:3, 3] = self.translation
        return out

    def record_fields(self) -> dict:
        """translation / rotation / camera_intrinsic as JSON-ready lists (calibrated_sensor fields)."""
        return {
            "translation": [float(v) for v in self.translation],
            "rotation": [float(v) for v in self.rotation],
            "camera_intrinsic": ([] if self.intrinsics is None
                                 else [[float(v) for v in row] for row in self.intrinsics]),
        }


@dataclass(frozen=True)
class Rig:
    """The 12 sensors of one scene, in ALL_CHANNELS order."""

    sensors: tuple[SensorCalib, ...]

    def __getitem__(self, channel: str) -> SensorCalib:
        for s in self.sensors:
            if s.channel == channel:
                return s
        raise KeyError(channel)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(s.channel for s in self.sensors)


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _quat(rot: np.ndarray) -> np.ndarray:
    """(4,) [w, x, y, z] with w >= 0 of a rotation matrix (canonical sign: deterministic tables)."""
    q = Quaternion(matrix=rot, atol=1e-9).normalised
    arr = np.array([q.w, q.x, q.y, q.z])
    return -arr if arr[0] < 0 else arr


# Camera frame (x right, y down, z optical axis) expressed in a "forward-looking" body frame
# (x forward, y left, z up): the optical axis is body +x, image right is body -y, image down is -z.
_CAM_AXES = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_intrinsics(width: int, height: int, hfov_deg: float,
                      focal_scale: float = 1.0, pp_offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(3, 3) pinhole matrix for a ``width`` x ``height`` image with horizontal FOV ``hfov_deg``.

    Square pixels (fx == fy) as in nuScenes; principal point at the image centre shifted by
    ``pp_offset`` (pixels)."""
    fx = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2.0) * focal_scale
    return np.array([[fx, 0.0, width / 2.0 + pp_offset[0]],
                     [0.0, fx, height / 2.0 + pp_offset[1]],
                     [0.0, 0.0, 1.0]])


def build_rig(image_width: int = 640, image_height: int = 360,
              rng: np.random.Generator | None = None, jitter: float = 1.0) -> Rig:
    """The rig of one scene. ``rng`` None (or ``jitter`` 0) gives the nominal calibration.

    Jitter: translation sigma 5 mm, yaw/pitch/roll sigma 0.2 deg, focal sigma 1 %, principal
    point sigma 0.5 % of the image size, all times ``jitter``."""
    scale = 0.0 if rng is None else float(jitter)
    if rng is None:
        rng = np.random.default_rng(0)   # draws are multiplied by 0: nominal rig

    def noisy_t(t):
        return np.asarray(t, dtype=np.float64) + rng.normal(0.0, _JITTER_T * scale, 3)

    def noisy_rot(yaw, pitch=0.0, roll=0.0):
        d = rng.normal(0.0, _JITTER_ANGLE * scale, 3)
        # Yaw about ego z, then pitch (positive = looking down) and roll about the body axes.
        return _rot_z(yaw + d[0]) @ _rot_y(pitch + d[1]) @ _rot_x(roll + d[2])

    sensors = []
    t, yaw = _LIDAR_MOUNT
    sensors.append(SensorCalib(LIDAR_CHANNEL, "lidar", noisy_t(t), _quat(noisy_rot(yaw))))
    for ch in CAMERA_CHANNELS:
        t, yaw, hfov = _CAMERA_MOUNTS[ch]
        rot = noisy_rot(yaw, _CAMERA_PITCH_DEG) @ _CAM_AXES
        focal = 1.0 + rng.normal(0.0, _JITTER_FOCAL * scale)
        pp = rng.normal(0.0, _JITTER_PP * scale, 2) * np.array([image_width, image_height])
        k = camera_intrinsics(image_width, image_height, hfov, focal, (pp[0], pp[1]))
        sensors.append(SensorCalib(ch, "camera", noisy_t(t), _quat(rot), k,
                                   int(image_width), int(image_height)))
    for ch in RADAR_CHANNELS:
        t, yaw = _RADAR_MOUNTS[ch]
        # Radars are mounted level: the model assumes returns in the sensor's z = 0 plane.
        sensors.append(SensorCalib(ch, "radar", noisy_t(t), _quat(noisy_rot(yaw, 0.0, 0.0))))
    return Rig(tuple(sensors))
