"""Class and attribute vocabularies shared by the reader, the heads and the results writer.

Defined here (identical to ``nuscenes.eval.detection.constants``, which a test checks) so that
``perception.structures`` does not import the devkit.
"""
from __future__ import annotations

# The 10 nuScenes detection classes, devkit order: a label is an index into this tuple.
DETECTION_CLASSES: tuple[str, ...] = (
    "car", "truck", "bus", "trailer", "construction_vehicle",
    "pedestrian", "motorcycle", "bicycle", "traffic_cone", "barrier",
)
# The 8 nuScenes attributes, devkit ``ATTRIBUTE_NAMES`` order; -1 means "no attribute".
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "pedestrian.moving", "pedestrian.sitting_lying_down", "pedestrian.standing",
    "cycle.with_rider", "cycle.without_rider",
    "vehicle.moving", "vehicle.parked", "vehicle.stopped",
)
NO_ATTRIBUTE = -1
# The classes that carry vehicle.* and cycle.* attributes (pedestrian carries pedestrian.*; cones
# and barriers none): also the classes that move along their heading.
VEHICLE_CLASSES: tuple[str, ...] = ("car", "truck", "bus", "trailer", "construction_vehicle")
CYCLE_CLASSES: tuple[str, ...] = ("motorcycle", "bicycle")


def attribute_prefix(name: str) -> str | None:
    """The attribute family a class may carry ("vehicle.", "cycle.", "pedestrian."), or None."""
    if name in VEHICLE_CLASSES:
        return "vehicle."
    if name in CYCLE_CLASSES:
        return "cycle."
    return "pedestrian." if name == "pedestrian" else None
# nuScenes visibility tokens "1".."4" = 0-40 %, 40-60 %, 60-80 %, 80-100 % of the object visible
# across the 6 cameras; 0 stands for an empty token.
VISIBILITY_LEVELS: tuple[str, ...] = ("unknown", "v0-40", "v40-60", "v60-80", "v80-100")

# Camera order used wherever cameras are stacked (Batch): a clockwise ring seen from above,
# starting at the front, so that neighbouring panels (overlapping fields of view) are adjacent.
CAMERA_CHANNELS: tuple[str, ...] = (
    "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT",
)
RADAR_CHANNELS: tuple[str, ...] = (
    "RADAR_FRONT", "RADAR_FRONT_LEFT", "RADAR_FRONT_RIGHT", "RADAR_BACK_LEFT", "RADAR_BACK_RIGHT",
)
LIDAR_CHANNEL = "LIDAR_TOP"
