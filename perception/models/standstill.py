"""Standing or moving, by the speed: the last step of ``FusionDetector.predict``.

A detection slower than its family's ``MOVING_SPEED`` stands: its velocity becomes 0 and a
moving attribute becomes the family's still one; at that speed or faster it moves and gets the
moving attribute. nuScenes' attributes say what the velocity says (a vehicle is
``vehicle.moving`` or parked / stopped, a pedestrian ``pedestrian.moving`` or standing /
sitting, a cycle carries a rider, ``cycle.with_rider``, whenever it moves), and its velocity
error (AVE) charges every m/s given to what stands.

Why a rule after the network: the head's attribute classifier reads one frame and has no other
cue for motion than the LiDAR sweeps' trails, while the velocity a detection leaves ``predict``
with is the head's regression then what radar measured (``perception.models.radar.velocity``);
and the regression gives what stands a small speed, never zero. The shipped fusion model on
the 24-scene synthetic val set called 1,653 of the 1,931 matched standing pedestrians moving
(regressed at 0.02 m/s, median) and 286 of the 313 parked buses (0.21 m/s): attribute errors
0.47 and 0.69; parked cars kept 0.26 m/s (median). docs/results.md, "Standing or moving, by
the speed", has what the rule gains.

Per family: vehicles and pedestrians both ways (slower: the moving attribute becomes
``SLOW_ATTRIBUTE``, parked or standing; other still attributes, stopped or sitting, stay the
head's call). Cycles only ever gain a rider: one standing at a light still carries it, and the
head, which sees the rider, is better at that than the speed. Classes without attributes
(barriers, traffic cones) and the boxes' other columns and scores are untouched.

The known cost: what moves slower than the threshold is stopped. On the real scene-0916 (a
parking lot) the ground truth has 39 of its 74 moving vehicles and 62 of its 191 walking
pedestrians below 1.0 / 0.3 m/s, so ``configs/nuscenes/fusion.yaml`` leaves the rule off.

``TemporalStep`` (``perception.models.temporal``), which runs after ``predict`` over a sequence,
only sets speeds at or above these (its classes' ``MIN_SPEED``) or to 0, with the attribute
that goes with each: it never undoes this rule.

Facing the motion (``face_motion``, ``model.face_motion``): the very last step of inference,
after ``TemporalStep`` (``perception.engine.inference.run_inference``), so on the velocities
that are written. A vehicle, cycle or pedestrian at or above its family's moving speed faces
where it moves: its yaw becomes the direction of its velocity. Things on the road move forwards,
and a speed the network, radar or the previous keyframe measured gives a box's axis better than
the head's heading regression does: on the 24-scene synthetic val set, over the LiDAR model's
detections moving at 4 m/s or more the heading error is 0.34 / 0.37 / 0.31 rad (car / truck /
bus) as regressed and 0.17 / 0.07 / 0.08 along the velocity (docs/results.md, "Facing the
motion"). What stands keeps the head's heading. The known cost: a vehicle reversing is turned
round.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

import torch

from perception.structures.boxes import Boxes3D
from perception.structures.instances import Detections
from perception.structures.labels import ATTRIBUTE_NAMES, attribute_prefix

# m/s per attribute family: the speed from which a detection moves. Vehicles: above the ~0.3-0.5
# m/s the head gives parked cars (75th percentile 0.47 m/s on the 24-scene val set), below the
# slowest traffic; pedestrians: the head gives standing ones 0.01-0.03 m/s and walking ones
# ~1.2 m/s (or the same ~0 where it misses the motion). Measured on the 7-scene val set of the
# 40-scene world (docs/results.md): 1.0 / 1.0 / 0.3 and 1.5 / 1.5 / 0.3 score within 0.001 NDS
# of each other, 0.75 / 0.75 / 0.3 0.003 lower.
MOVING_SPEED: dict[str, float] = {"vehicle.": 1.0, "cycle.": 1.0, "pedestrian.": 0.3}
MOVING_ATTRIBUTE: dict[str, str] = {"vehicle.": "vehicle.moving", "cycle.": "cycle.with_rider",
                                    "pedestrian.": "pedestrian.moving"}
# A moving attribute's replacement below the speed (None: the head's attribute stays).
SLOW_ATTRIBUTE: dict[str, str | None] = {"vehicle.": "vehicle.parked", "cycle.": None,
                                         "pedestrian.": "pedestrian.standing"}


def family_speeds(classes: Sequence[str], moving_speed: Mapping[str, float]) -> torch.Tensor:
    """Per class, its attribute family's speed from ``moving_speed`` (float64; NaN for a class
    without a family, which compares False with any speed). A family missing from
    ``moving_speed`` raises ``ValueError``."""
    missing = set(MOVING_ATTRIBUTE) - set(moving_speed)
    if missing:
        raise ValueError(f"moving_speed needs a speed for every attribute family; missing "
                         f"{sorted(missing)}")
    return torch.tensor([float("nan") if p is None else moving_speed[p]
                         for p in map(attribute_prefix, classes)], dtype=torch.float64)


def apply_standstill(dets: Detections, classes: Sequence[str], *,
                     moving_speed: Mapping[str, float] = MOVING_SPEED) -> Detections:
    """``dets`` with each detection of an attribute family standing or moving by its speed
    (see the module).

    Args:
        dets: detections whose boxes' columns 7:9 are the velocity; ``attributes`` (indices
            into ``ATTRIBUTE_NAMES``) may be None, then only velocities change.
        classes: class names of ``dets.labels``.
        moving_speed: m/s per attribute family ("vehicle.", "cycle.", "pedestrian.").
    """
    threshold = family_speeds(classes, moving_speed)
    if len(dets) == 0:
        return dets
    # Per class: its family's moving and slow attribute (-1: none).
    prefixes = [attribute_prefix(c) for c in classes]
    moving_attr = torch.tensor([-1 if p is None else ATTRIBUTE_NAMES.index(MOVING_ATTRIBUTE[p])
                                for p in prefixes])
    slow_attr = torch.tensor([-1 if p is None or SLOW_ATTRIBUTE[p] is None
                              else ATTRIBUTE_NAMES.index(SLOW_ATTRIBUTE[p]) for p in prefixes])
    labels = dets.labels.cpu()
    boxes = dets.boxes.tensor.clone()
    speed = torch.linalg.vector_norm(boxes[:, 7:9].double(), dim=1).cpu()
    thr = threshold[labels]
    # NaN speeds and classes without a family compare False both ways: left alone.
    moves = torch.isfinite(speed) & (speed >= thr)
    stands = torch.isfinite(speed) & (speed < thr)
    boxes[stands.to(boxes.device), 7:9] = 0.0
    attrs = dets.attributes
    if attrs is not None:
        a = attrs.cpu()
        a = torch.where(moves, moving_attr[labels], a)
        demote = stands & (a == moving_attr[labels]) & (slow_attr[labels] >= 0)
        attrs = torch.where(demote, slow_attr[labels], a).to(attrs.device)
    return replace(dets, boxes=Boxes3D(boxes), attributes=attrs)


def face_motion(dets: Detections, classes: Sequence[str], *,
                moving_speed: Mapping[str, float] = MOVING_SPEED) -> Detections:
    """``dets`` with each detection of an attribute family at or above its family's speed
    facing its velocity (yaw = atan2(vy, vx); see the module). Boxes' columns 6 (yaw) and 7:9
    (velocity) in one frame, any frame. Other classes, slower or NaN velocities: untouched.
    """
    threshold = family_speeds(classes, moving_speed)
    if len(dets) == 0:
        return dets
    boxes = dets.boxes.tensor.clone()
    vel = boxes[:, 7:9].double()
    speed = torch.linalg.vector_norm(vel, dim=1)
    # NaN speeds and classes without a family compare False: left alone. A zero threshold
    # would leave atan2(0, 0) = 0: a box that does not move has no direction to face.
    moves = (speed >= threshold.to(speed.device)[dets.labels.to(speed.device)]) & (speed > 0)
    yaw = torch.atan2(vel[:, 1], vel[:, 0]).to(boxes.dtype)
    boxes[:, 6] = torch.where(moves, yaw, boxes[:, 6])
    return replace(dets, boxes=Boxes3D(boxes))


__all__ = ["MOVING_ATTRIBUTE", "MOVING_SPEED", "SLOW_ATTRIBUTE", "apply_standstill",
           "face_motion"]
