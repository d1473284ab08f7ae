"""What the sensor models see: the synthetic world at one instant, in the global frame.

This is the one contract between the scenario (``world.py``: roads, actors, trajectories) and the
sensor models (``lidar.py``, ``radar.py``, ``camera.py``). Everything solid is an oriented box
(a "part"); an object may be several parts (a car is a body and a cabin, a pedestrian legs, torso
and head), all of them strictly inside its annotation box so that sensor returns on an object's
surface fall inside the annotated box. The ground is the plane z = 0 of the global frame; what it is
made of (road, lane paint, sidewalk, grass) is a raster, :class:`GroundMap`.

Units: metres, radians (yaw counter-clockwise from global +x), metres per second.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------------------------
# Materials: one row per material, looked up by id. Columns are what each sensor needs:
#   lidar reflectivity (0..1, the intensity scale), radar cross-section density (dBsm for a
#   square metre of visible face), camera base colour (RGB).
# Values are plausible rather than measured: asphalt is dark and weakly reflective, lane paint
# and licence-plate-like vehicle bodies are retro-reflective, metal is a strong radar target.
# --------------------------------------------------------------------------------------------
MATERIAL_NAMES = (
    "road", "lane_marking", "sidewalk", "grass", "building", "pole", "vegetation",
    "vehicle", "glass", "person", "bicycle", "barrier", "traffic_cone", "tire",
)
MATERIAL = {name: i for i, name in enumerate(MATERIAL_NAMES)}

LIDAR_REFLECTIVITY = np.array([
    0.08, 0.60, 0.15, 0.10, 0.25, 0.35, 0.20, 0.30, 0.05, 0.12, 0.30, 0.45, 0.70, 0.04,
], dtype=np.float32)
RADAR_RCS_DBSM = np.array([
    -30.0, -28.0, -25.0, -30.0, 5.0, 3.0, -12.0, 8.0, 0.0, -8.0, -3.0, 2.0, -10.0, 0.0,
], dtype=np.float32)
CAMERA_COLOR = np.array([
    (70, 70, 75), (225, 225, 215), (150, 145, 140), (70, 120, 60), (160, 140, 120),
    (110, 110, 110), (50, 100, 45), (120, 30, 30), (30, 40, 50), (60, 50, 90),
    (40, 40, 40), (200, 190, 60), (240, 110, 20), (20, 20, 20),
], dtype=np.uint8)
assert len(LIDAR_REFLECTIVITY) == len(RADAR_RCS_DBSM) == len(CAMERA_COLOR) == len(MATERIAL_NAMES)


@dataclass
class Parts:
    """All solid parts at one timestamp, global frame. M parts.

    center:   (M, 3) float64  box centre (x, y, z), metres
    size:     (M, 3) float64  l (along yaw), w, h, metres
    yaw:      (M,)   float64  radians, counter-clockwise from global +x
    velocity: (M, 3) float64  global velocity, m/s (0 for the static world)
    material: (M,)   int64    index into MATERIAL_NAMES
    color:    (M, 3) uint8    camera colour of this part (per-object variation of the material's)
    instance: (M,)   int64    index of the annotated object this part belongs to, -1 for static world
    """

    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    velocity: np.ndarray
    material: np.ndarray
    color: np.ndarray
    instance: np.ndarray

    def __post_init__(self) -> None:
        m = len(self.center)
        for name, shape in (("center", (m, 3)), ("size", (m, 3)), ("yaw", (m,)),
                            ("velocity", (m, 3)), ("material", (m,)), ("color", (m, 3)),
                            ("instance", (m,))):
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ValueError(f"Parts.{name}: expected shape {shape}, got {arr.shape}")

    def __len__(self) -> int:
        return len(self.center)

    def select(self, mask: np.ndarray) -> "Parts":
        return Parts(self.center[mask], self.size[mask], self.yaw[mask], self.velocity[mask],
                     self.material[mask], self.color[mask], self.instance[mask])

    def corners(self) -> np.ndarray:
        """(M, 8, 3) corners. Order: bottom face then top face, each counter-clockwise seen from
        above starting at (+l/2, +w/2): (+,+), (-,+), (-,-), (+,-)."""
        sx = np.array([1, -1, -1, 1, 1, -1, -1, 1], dtype=np.float64) * 0.5
        sy = np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=np.float64) * 0.5
        sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1], dtype=np.float64) * 0.5
        lx = self.size[:, 0:1] * sx
        ly = self.size[:, 1:2] * sy
        lz = self.size[:, 2:3] * sz
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = self.center[:, 0:1] + c * lx - s * ly
        y = self.center[:, 1:2] + s * lx + c * ly
        z = self.center[:, 2:3] + lz
        return np.stack([x, y, z], axis=-1)


@dataclass
class GroundMap:
    """Material of the ground plane z = 0, as a raster in the global frame.

    ids:        (H, W) uint8 material ids; row r, column c covers
                x in [x0 + c * res, x0 + (c + 1) * res), y in [y0 + r * res, y0 + (r + 1) * res)
    x0, y0:     global coordinates of the raster's corner, metres
    resolution: metres per cell
    Outside the raster the ground is grass.
    """

    ids: np.ndarray
    x0: float
    y0: float
    resolution: float

    def material_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Vectorized lookup: material id (same shape as x) of the ground at global (x, y)."""
        col = np.floor((np.asarray(x) - self.x0) / self.resolution).astype(np.int64)
        row = np.floor((np.asarray(y) - self.y0) / self.resolution).astype(np.int64)
        h, w = self.ids.shape
        inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
        out = np.full(np.shape(x), MATERIAL["grass"], dtype=np.int64)
        out[inside] = self.ids[row[inside], col[inside]]
        return out


@dataclass
class Snapshot:
    """The world at one timestamp: what a sensor sampled at that time sees."""

    timestamp_us: int
    parts: Parts
    ground: GroundMap
