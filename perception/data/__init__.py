"""Datasets producing :class:`perception.structures.Frame`.

``perception.data.synthetic`` (the synthetic world writer) is a separate subpackage, imported
explicitly where needed. The names below load on first use, so that importing a torch-free part
(``perception.data.poses``, the synthetic world) does not import torch: the generator's worker
processes would otherwise each spend seconds loading it for nothing.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load on first use
    from perception.data.nuscenes import MODALITIES, NuScenesDataset, SensorFileError
    from perception.structures.labels import (
        ATTRIBUTE_NAMES,
        CAMERA_CHANNELS,
        DETECTION_CLASSES,
        LIDAR_CHANNEL,
        RADAR_CHANNELS,
    )

_EXPORTS = {
    "MODALITIES": "perception.data.nuscenes",
    "NuScenesDataset": "perception.data.nuscenes",
    "SensorFileError": "perception.data.nuscenes",
    "ATTRIBUTE_NAMES": "perception.structures.labels",
    "CAMERA_CHANNELS": "perception.structures.labels",
    "DETECTION_CLASSES": "perception.structures.labels",
    "LIDAR_CHANNEL": "perception.structures.labels",
    "RADAR_CHANNELS": "perception.structures.labels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'perception.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
