"""Per-box sets: model outputs (:class:`Detections`) and annotations (:class:`GroundTruth`).

Both index like a tensor along the box dimension (int / slice / bool mask / index tensor), every
field following along, and move with ``.to(device)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from perception.structures.boxes import Boxes3D, Index


def _normalize_index(index: Index, n: int, device) -> Index:
    """Turn list/ndarray indices into tensors and ints into 1-element slices (keeps the N dim)."""
    if isinstance(index, int):
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} boxes")
        index = index % n if n else index
        return slice(index, index + 1)
    if isinstance(index, (list, tuple, np.ndarray)):
        return torch.as_tensor(np.asarray(index), device=device)
    return index


def _index_list(items: list, index: Index, n: int) -> list:
    """Index a python list the way a tensor of length n would be indexed."""
    if isinstance(index, slice):
        return items[index]
    rows = torch.arange(n)[torch.as_tensor(index).cpu()]
    return [items[i] for i in rows.reshape(-1).tolist()]


def _check_len(name: str, value, n: int) -> None:
    if value is not None and len(value) != n:
        raise ValueError(f"{name} has length {len(value)}, expected {n} (one per box)")


def _as_long(x) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.int64)


@dataclass
class Detections:
    """Detected boxes of one frame.

    Attributes:
        boxes: N boxes (see :class:`Boxes3D`), in the frame's ego frame.
        scores: (N,) float confidence in [0, 1].
        labels: (N,) int64 index into ``DETECTION_CLASSES``.
        attributes: (N,) int64 index into ``ATTRIBUTE_NAMES`` (-1 = none), or None.
    """

    boxes: Boxes3D
    scores: Tensor
    labels: Tensor
    attributes: Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.boxes, Boxes3D):
            self.boxes = Boxes3D(self.boxes)
        if not isinstance(self.scores, Tensor):
            self.scores = torch.as_tensor(np.asarray(self.scores, dtype=np.float32))
        self.labels = _as_long(self.labels)
        if self.attributes is not None:
            self.attributes = _as_long(self.attributes)
        n = len(self.boxes)
        for name in ("scores", "labels", "attributes"):
            value = getattr(self, name)
            if value is not None and value.ndim != 1:
                raise ValueError(f"{name} must be 1-D, got shape {tuple(value.shape)}")
            _check_len(name, value, n)
        if self.labels.dtype != torch.int64:
            raise TypeError(f"labels must be int64, got {self.labels.dtype}")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Index) -> "Detections":
        index = _normalize_index(index, len(self), self.boxes.device)
        return Detections(
            boxes=self.boxes[index],
            scores=self.scores[index],
            labels=self.labels[index],
            attributes=None if self.attributes is None else self.attributes[index],
        )

    def to(self, device) -> "Detections":
        return Detections(
            boxes=self.boxes.to(device),
            scores=self.scores.to(device),
            labels=self.labels.to(device),
            attributes=None if self.attributes is None else self.attributes.to(device),
        )

    @classmethod
    def cat(cls, items: Iterable["Detections"]) -> "Detections":
        items = list(items)
        if not items:
            return cls(Boxes3D.empty(), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
        with_attr = [d.attributes is not None for d in items]
        if any(with_attr) and not all(with_attr):
            raise ValueError("cannot concatenate Detections with and without attributes")
        return cls(
            boxes=Boxes3D.cat(d.boxes for d in items),
            scores=torch.cat([d.scores for d in items]),
            labels=torch.cat([d.labels for d in items]),
            attributes=torch.cat([d.attributes for d in items]) if all(with_attr) else None,
        )


@dataclass
class GroundTruth:
    """Annotated boxes of one frame.

    Attributes:
        boxes: M boxes in the ego frame of the LiDAR keyframe; velocity NaN where the devkit
            cannot estimate it (annotation seen once).
        labels: (M,) int64 index into ``DETECTION_CLASSES``.
        attributes: (M,) int64 index into ``ATTRIBUTE_NAMES``, -1 for none.
        num_lidar_pts: (M,) int64 LiDAR points in the box (nuScenes annotation field).
        num_radar_pts: (M,) int64 radar points in the box (nuScenes annotation field).
        visibility: (M,) int64 visibility level 1..4 (0-40, 40-60, 60-80, 80-100 %), 0 unknown.
        instance_tokens: M nuScenes instance tokens (the object's identity across samples).
        annotation_tokens: M sample_annotation tokens (empty strings where not from nuScenes).
    """

    boxes: Boxes3D
    labels: Tensor
    attributes: Tensor | None = None
    num_lidar_pts: Tensor | None = None
    num_radar_pts: Tensor | None = None
    visibility: Tensor | None = None
    instance_tokens: list[str] = field(default_factory=list)
    annotation_tokens: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.boxes, Boxes3D):
            self.boxes = Boxes3D(self.boxes)
        n = len(self.boxes)
        self.labels = _as_long(self.labels)
        # Optional per-box integer fields default to "unknown" so that every GroundTruth has
        # the same fields, whichever source built it.
        defaults = {"attributes": -1, "num_lidar_pts": -1, "num_radar_pts": -1, "visibility": 0}
        for name, fill in defaults.items():
            value = getattr(self, name)
            if value is None:
                value = torch.full((n,), fill, dtype=torch.int64, device=self.boxes.device)
            setattr(self, name, _as_long(value))
        if not self.instance_tokens:
            self.instance_tokens = [""] * n
        if not self.annotation_tokens:
            self.annotation_tokens = [""] * n
        for name in ("labels", *defaults, "instance_tokens", "annotation_tokens"):
            _check_len(name, getattr(self, name), n)
        for name in ("labels", *defaults):
            if getattr(self, name).dtype != torch.int64:
                raise TypeError(f"{name} must be int64, got {getattr(self, name).dtype}")
        self.instance_tokens = list(self.instance_tokens)
        self.annotation_tokens = list(self.annotation_tokens)

    def __len__(self) -> int:
        return len(self.boxes)

    _TENSOR_FIELDS = ("labels", "attributes", "num_lidar_pts", "num_radar_pts", "visibility")

    def __getitem__(self, index: Index) -> "GroundTruth":
        n = len(self)
        index = _normalize_index(index, n, self.boxes.device)
        kwargs = {name: getattr(self, name)[index] for name in self._TENSOR_FIELDS}
        return GroundTruth(
            boxes=self.boxes[index],
            instance_tokens=_index_list(self.instance_tokens, index, n),
            annotation_tokens=_index_list(self.annotation_tokens, index, n),
            **kwargs,
        )

    def to(self, device) -> "GroundTruth":
        kwargs = {name: getattr(self, name).to(device) for name in self._TENSOR_FIELDS}
        return GroundTruth(
            boxes=self.boxes.to(device),
            instance_tokens=list(self.instance_tokens),
            annotation_tokens=list(self.annotation_tokens),
            **kwargs,
        )

    @classmethod
    def empty(cls) -> "GroundTruth":
        return cls(Boxes3D.empty(), torch.zeros(0, dtype=torch.int64))

