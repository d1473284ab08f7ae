"""Typed data passed between the model's stages (what encoders, fuser and head return)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class BEVFeatures:
    """One modality's bird's-eye-view map.

    Attributes:
        features: (B, C, H, W) float, ``BEVGrid`` layout (rows +y, columns +x).
        valid: (B, H, W) bool, cells where this sensor can say anything for that frame (frame has
            the sensor and, for cameras, the cell lies in a present camera's frustum). The fuser
            masks invalid cells out; their feature values are never used.
        depth_logits: cameras only: (B, N, D, h, w) the lift's depth logits per camera and
            feature pixel (rows of absent cameras are meaningless), for depth supervision.
        image_features: cameras only: (B, N, C, h, w) the feature maps the lift took (rows of
            absent cameras zero), for ``camera.paint``.
        unpainted: LiDAR only, when camera features were painted onto it
            (``camera.paint``): ``features`` without them, for passes without the cameras.
        pixel_logits: cameras only, with the painter's pixel head: (B, N, 1 + K + 2, h, w).
    """

    features: Tensor
    valid: Tensor
    depth_logits: Tensor | None = None
    image_features: Tensor | None = None
    unpainted: Tensor | None = None
    pixel_logits: Tensor | None = None


@dataclass
class HeadOutput:
    """Raw head maps of one class group.

    Attributes:
        heatmap: (B, K_g, H, W) logits, one channel per class of the group.
        regression: (B, 10, H, W): dx, dy (centre offset within the cell, cells), z (m),
            log l, log w, log h (log m), sin yaw, cos yaw, vx, vy (units of 5 m/s,
            ``heads.targets.VELOCITY_SCALE``).
        attribute: (B, 8, H, W) logits over ``ATTRIBUTE_NAMES``.
    """

    heatmap: Tensor
    regression: Tensor
    attribute: Tensor


@dataclass
class SubsetOutput:
    """The head maps of some frames fused again from a subset of their sensors.

    Attributes:
        sensors: the subset (sensor names).
        frames: (F,) int64 CPU, the batch frames these maps belong to (rows of ``heads``).
        heads: one ``HeadOutput`` per class group, batch dimension F.
    """

    sensors: tuple[str, ...]
    frames: Tensor
    heads: tuple[HeadOutput, ...]


@dataclass
class DetectorOutput:
    """What ``FusionDetector.forward`` returns.

    Attributes:
        heads: one ``HeadOutput`` per class group (``HeadConfig.class_groups`` order).
        present: (B, M) bool, which modalities (``FusionDetector.modalities`` order) were used
            for each frame (after modality dropout).
        fused: (B, C, H, W) fused BEV features.
        depth_logits: the camera encoder's (B, N, D, h, w) depth logits when it ran, else None.
        subsets: in training, one ``SubsetOutput`` per ``subset_loss`` subset that changed some
            frame's sensors; empty otherwise.
        pixel_logits: the painter's pixel head's (B, N, 1 + K + 2, h, w) logits when it ran.
    """

    heads: tuple[HeadOutput, ...]
    present: Tensor
    fused: Tensor
    depth_logits: Tensor | None = None
    subsets: tuple[SubsetOutput, ...] = ()
    pixel_logits: Tensor | None = None
