"""Datasets producing :class:`perception.structures.Frame`.

``perception.data.synthetic`` (the synthetic world writer) is a separate subpackage, imported
explicitly where needed.
"""
from perception.data.nuscenes import MODALITIES, NuScenesDataset, SensorFileError
from perception.structures.labels import (
    ATTRIBUTE_NAMES,
    CAMERA_CHANNELS,
    DETECTION_CLASSES,
    LIDAR_CHANNEL,
    RADAR_CHANNELS,
)

__all__ = [
    "ATTRIBUTE_NAMES", "CAMERA_CHANNELS", "DETECTION_CLASSES", "LIDAR_CHANNEL", "MODALITIES",
    "NuScenesDataset", "RADAR_CHANNELS", "SensorFileError",
]
