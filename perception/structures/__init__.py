"""Typed data passed between stages (no nn modules here).

- :class:`Boxes3D` (N, 9) boxes ``x, y, z, l, w, h, yaw, vx, vy``;
- :class:`Detections`, :class:`GroundTruth`: per-box sets;
- :class:`BEVGrid`: the BEV raster definition;
- :class:`Calibration`, :class:`SensorSample`, :class:`Frame`: one multi-sensor sample;
- :class:`Batch`, :func:`collate`: frames collated for models.
"""
from perception.structures.batch import Batch, collate, points_with_batch_index
from perception.structures.boxes import BOX_FIELDS, Boxes3D
from perception.structures.frame import (
    LIDAR_FIELDS,
    RADAR_FIELDS,
    Calibration,
    Frame,
    SensorSample,
)
from perception.structures.grid import BEVGrid
from perception.structures.instances import Detections, GroundTruth
from perception.structures.labels import (
    ATTRIBUTE_NAMES,
    CAMERA_CHANNELS,
    DETECTION_CLASSES,
    LIDAR_CHANNEL,
    NO_ATTRIBUTE,
    RADAR_CHANNELS,
    VISIBILITY_LEVELS,
)

__all__ = [
    "ATTRIBUTE_NAMES", "BEVGrid", "BOX_FIELDS", "Batch", "Boxes3D", "CAMERA_CHANNELS",
    "Calibration", "DETECTION_CLASSES", "Detections", "Frame", "GroundTruth", "LIDAR_CHANNEL",
    "LIDAR_FIELDS", "NO_ATTRIBUTE", "RADAR_CHANNELS", "RADAR_FIELDS", "SensorSample",
    "VISIBILITY_LEVELS", "collate", "points_with_batch_index",
]
