"""The previous keyframe's detections: velocity from the displacement, confidence from being seen again.

The network learns speed late at the budgets we train (docs/training.md, "Why velocity and
heading still lag"), and radar measures it only for what returns enough Doppler
(``perception.models.radar.velocity``): cars, trucks and buses, not motorcycles, bicycles or
pedestrians (the synthetic world's motorcycles return 0.6 moving returns a box, pedestrians
~1). But a detector that runs over a sequence sees every object twice: its displacement
between two keyframes over the time between them is its velocity. This step does that, after
decoding and after the radar refinement, using past frames only (as the nuScenes detection
rules allow):

- Matching, in the global frame: each detection of a moving class (vehicles, cycles,
  pedestrians) is paired with a detection of the same class in the previous keyframe of the
  same scene, nearest first over all pairs (greedy), within a class gate around where its
  current velocity puts it ``dt`` earlier (``max_speed * dt``, the velocity undone first).
  Both score at least ``min_score``; a weaker detection of the class in the previous keyframe
  within the class's floor of where the detection is now contests the pair
  (``pair_with_previous``).
- Velocity: ``(centre - previous centre) / dt``. It replaces the detection's velocity only
  where the object is clearly moving (the estimate at least ``min_speed`` of its class, above
  the jitter of two centre estimates) and the current velocity disagrees by more than
  ``disagree`` m/s: a radar-measured speed (which agrees) and a parked car's zero (which is
  below ``min_speed``) are kept.
- Heading: a vehicle or cycle moving against its predicted heading is turned round (they
  drive forwards); a moving pedestrian faces where it walks. The attribute becomes the moving
  one of its class.
- Still (``still_from_previous``, ``model.temporal_still``), the converse: where the
  displacement is below half the class's ``min_speed`` and the detection's own velocity differs
  from it by more than ``disagree`` m/s, the network saw motion where there was none (a parked
  bus taken for traffic): the velocity becomes 0 and a moving attribute its family's
  ``STILL_ATTRIBUTE``.

A second, optional use of the same pairing (``score_from_previous``, ``model.temporal_score``):
an object is there in consecutive keyframes, a false positive mostly is not. A detection found
again within ``gate`` metres of where a previous detection of its class was (its velocity
undone) has its score raised as a noisy-OR of the two, ``1 - (1 - s) (1 - w s_prev)``; the others
keep theirs. Only the ranking across the split changes (AP), not the boxes.

The first keyframe of a scene (and a frame more than ``max_dt`` after its predecessor, or one
whose predecessor had no detections) keeps what the network and radar gave. Boxes are in the
global frame here; ``TemporalStep`` wraps both for detections in each frame's ego frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from perception.structures.boxes import Boxes3D
from perception.structures.instances import Detections
from perception.structures.labels import ATTRIBUTE_NAMES, attribute_prefix

# m/s: the fastest each class is expected to move (the gate), and the speed from which its
# displacement is trusted over the jitter of two centre estimates (~0.2-0.3 m for vehicles,
# ~0.1 m for pedestrians, over 0.5 s).
MAX_SPEED = {"car": 25.0, "truck": 20.0, "bus": 20.0, "trailer": 20.0,
             "construction_vehicle": 10.0, "motorcycle": 25.0, "bicycle": 12.0,
             "pedestrian": 3.0}
MIN_SPEED = {"car": 1.5, "truck": 1.5, "bus": 1.5, "trailer": 1.5, "construction_vehicle": 1.5,
             "motorcycle": 1.5, "bicycle": 1.0, "pedestrian": 0.5}
_MOVING = {"vehicle.": ATTRIBUTE_NAMES.index("vehicle.moving"),
           "cycle.": ATTRIBUTE_NAMES.index("cycle.with_rider"),
           "pedestrian.": ATTRIBUTE_NAMES.index("pedestrian.moving")}
# What a still object's moving attribute becomes: the most common non-moving one of its family
# in the training world (the 40-scene world's train split, boxes with LiDAR points: vehicles
# 5,429 parked and 1,038 stopped, so for cars, trucks and trailers too; buses, 27 stopped and
# 18 parked, and construction vehicles, 16 stopped, are too few to go by. Cycles are without a
# rider when still, pedestrians standing).
STILL_ATTRIBUTE = {"vehicle.": "vehicle.parked", "cycle.": "cycle.without_rider",
                   "pedestrian.": "pedestrian.standing"}
# A displacement of at least this many times its class's floor is beyond the jitter of two
# centre estimates (2.25 m over 0.5 s for a car) and needs no confirmation (``confirm``).
CONFIRM_FREE = 3.0


def _nearest_pairs(dist: Tensor) -> tuple[Tensor, Tensor]:
    """Greedy one-to-one pairing, nearest pair first: rows and columns of the pairs taken from an
    (N, M) distance matrix whose disallowed entries are inf."""
    rows, cols = torch.nonzero(torch.isfinite(dist), as_tuple=True)
    order = torch.argsort(dist[rows, cols], stable=True).tolist()
    used_r, used_c, pairs = set(), set(), []
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    idx = torch.tensor(pairs, dtype=torch.int64, device=dist.device).reshape(-1, 2)
    return idx[:, 0], idx[:, 1]


class Pairs(NamedTuple):
    """This frame's detections paired with the previous keyframe's (``pair_with_previous``)."""

    rows: Tensor       # (P,) int64: the paired detections of this frame
    cols: Tensor       # (P,) int64: their partners in the previous keyframe
    velocity: Tensor   # (P, 2) float64: their displacement over dt, m/s
    own: Tensor        # (P, 2) float64: their own velocity (0 where NaN)
    labels: Tensor     # (P,) int64
    floor: Tensor      # (C,) float64: each class's min_speed, inf for classes without one
    contested: Tensor  # (P,) bool: a weak previous detection of its class says it stood


def pair_with_previous(boxes: Tensor, labels: Tensor, scores: Tensor, prev_boxes: Tensor,
                       prev_labels: Tensor, prev_scores: Tensor, dt: float,
                       classes: Sequence[str], *, min_score: float = 0.3,
                       max_speed: dict | None = None, min_speed: dict | None = None) -> Pairs:
    """The pairing the moving and the still rule share (arguments as ``velocity_from_previous``):
    each detection scoring at least ``min_score`` with one of its class in the previous
    keyframe, nearest pairs first, within ``max_speed * dt`` of where its own velocity puts it
    ``dt`` earlier. Compute it once and pass it to both rules.

    A pair is ``contested`` where a detection of the class scoring under ``min_score`` in the
    previous keyframe lies within the class's floor (``min_speed * dt``) of the detection: that
    weak one may be the object itself, standing, and the strong partner a neighbour (a row of
    parked bicycles 5 m apart, one detected weakly in one keyframe, would else give its
    neighbour's position and 10 m/s). ``velocity_from_previous`` asks a contested displacement
    for the third keyframe's confirmation however large it is."""
    if dt <= 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    max_speed = MAX_SPEED if max_speed is None else max_speed
    min_speed = MIN_SPEED if min_speed is None else min_speed
    dev = boxes.device
    floor = torch.tensor([min_speed.get(c, math.inf) for c in classes], device=dev,
                         dtype=torch.float64)
    if len(boxes) == 0 or len(prev_boxes) == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        none2 = torch.zeros(0, 2, dtype=torch.float64, device=dev)
        return Pairs(empty, empty, none2, none2, empty, floor,
                     torch.zeros(0, dtype=torch.bool, device=dev))
    gate = torch.tensor([max_speed.get(c, 0.0) * dt for c in classes], device=dev,
                        dtype=torch.float64)
    b, p = boxes.double(), prev_boxes.to(dev).double()   # global: ~1e3 m
    # Where each detection was dt ago by its own velocity (0 where the network has none).
    back = b[:, :2] - torch.nan_to_num(b[:, 7:9]) * dt
    dist = torch.cdist(back, p[:, :2])                                         # (N, M)
    lab, prev_lab = labels.to(dev), prev_labels.to(dev)
    same = lab[:, None] == prev_lab[None]
    prev_strong = prev_scores.to(dev)[None] >= min_score
    ok = (same & prev_strong & (scores.to(dev)[:, None] >= min_score)
          & (dist <= gate[lab][:, None]))
    r, c = _nearest_pairs(torch.where(ok, dist, torch.full_like(dist, math.inf)))
    v = (b[r, :2] - p[c, :2]) / dt
    # A weak previous detection where the object would have stood (a displacement below the
    # floor): measured from where the detection is, not where its velocity puts it.
    weak_near = same & ~prev_strong & (torch.cdist(b[:, :2], p[:, :2])
                                       < (floor[lab] * dt)[:, None])
    return Pairs(r, c, v, torch.nan_to_num(b[r, 7:9]), lab[r], floor, weak_near.any(1)[r])


def velocity_from_previous(boxes: Tensor, labels: Tensor, scores: Tensor, prev_boxes: Tensor,
                           prev_labels: Tensor, prev_scores: Tensor, dt: float,
                           classes: Sequence[str], *, min_score: float = 0.3,
                           disagree: float = 1.0, max_speed: dict | None = None,
                           min_speed: dict | None = None,
                           pairs: Pairs | None = None, prev_motion: Tensor | None = None,
                           confirm: float | None = None) -> tuple[Tensor, Tensor]:
    """New boxes (velocity, heading) for one frame from the previous keyframe's, global frame.

    Args:
        boxes: (N, 9) this frame's boxes (x, y, z, l, w, h, yaw, vx, vy), global frame.
        labels, scores: (N,) of them.
        prev_boxes, prev_labels, prev_scores: the previous keyframe's, global frame.
        dt: seconds between the two keyframes (> 0).
        classes: class names of the labels.
        min_score: detections scoring less take no part (neither side).
        disagree: m/s; the estimate replaces a velocity that differs from it by more than this.
        max_speed, min_speed: per class m/s (defaults ``MAX_SPEED``, ``MIN_SPEED``); classes
            absent from ``max_speed`` (barriers, cones) are left alone.
        pairs: ``pair_with_previous`` of these arguments, when the caller has it already.
        prev_motion: (M, 2) the previous keyframe's detections' own displacement velocities
            (from the keyframe before it; NaN where a detection had no partner there).
        confirm: m/s; with ``prev_motion``, a displacement below ``CONFIRM_FREE`` times its
            class's floor counts only where its partner's own displacement agrees with it
            within this (the same motion over three keyframes): the jitter of two centre
            estimates of a standing object makes a displacement above the floor now and then,
            but not the same one twice running (two consecutive jitter displacements share a
            centre estimate, with opposite signs). So does a ``contested`` pair's of any size
            (``pair_with_previous``). None: one displacement is enough.
    Returns:
        ``(boxes, moving)``: the boxes with velocities and headings updated, and an (N,) bool
        mask of the ones this step found moving and changed.
    """
    out = boxes.clone()
    moving = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    if pairs is None:
        pairs = pair_with_previous(boxes, labels, scores, prev_boxes, prev_labels, prev_scores,
                                   dt, classes, min_score=min_score, max_speed=max_speed,
                                   min_speed=min_speed)
    r, c, v, own, lab, floor, contested = pairs
    if len(r) == 0:
        return out, moving
    b = boxes.double()
    speed = v.norm(dim=1)
    change = (speed >= floor[lab]) & ((v - own).norm(dim=1) > disagree)
    if confirm is not None:
        if prev_motion is None:
            raise ValueError("confirm needs prev_motion")
        before = prev_motion.to(v.device, v.dtype)[c]
        change &= (((v - before).norm(dim=1) <= confirm)    # False where before is NaN
                   | ((speed >= CONFIRM_FREE * floor[lab]) & ~contested))
    r, v, lab = r[change], v[change], lab[change]
    out[r, 7:9] = v.to(out.dtype)
    moving[r] = True
    # Heading: vehicles and cycles face their motion (turned round when it points backwards),
    # pedestrians face it.
    yaw = b[r, 6]
    heading = torch.stack([torch.cos(yaw), torch.sin(yaw)], 1)
    backwards = (heading * v).sum(1) < 0
    is_ped = torch.tensor([classes[int(i)] == "pedestrian" for i in lab], dtype=torch.bool,
                          device=boxes.device)
    new_yaw = torch.where(backwards & ~is_ped,
                          torch.remainder(yaw + 2 * math.pi, 2 * math.pi) - math.pi, yaw)
    new_yaw = torch.where(is_ped, torch.atan2(v[:, 1], v[:, 0]), new_yaw)
    out[r, 6] = new_yaw.to(out.dtype)
    return out, moving


def still_from_previous(boxes: Tensor, labels: Tensor, scores: Tensor, prev_boxes: Tensor,
                        prev_labels: Tensor, prev_scores: Tensor, dt: float,
                        classes: Sequence[str], *, min_score: float = 0.3,
                        disagree: float = 1.0, still_fraction: float = 0.5,
                        max_speed: dict | None = None, min_speed: dict | None = None,
                        pairs: Pairs | None = None, prev_motion: Tensor | None = None) -> Tensor:
    """(N,) bool: the detections that stood still since the previous keyframe although the
    network gives them a speed, global frame.

    Paired as in ``velocity_from_previous`` (``pairs``: the same pairing, if at hand); still where
    the displacement over ``dt`` is slower than ``still_fraction`` of the class's ``min_speed``
    (within the jitter of two centre estimates of a standing object) and the detection's own
    velocity differs from it by more than ``disagree`` m/s. The counterpart of the moving rule:
    there the displacement corrects a network that missed a motion, here one that sees motion
    where there was none (a parked bus or construction vehicle the network takes for traffic).

    ``prev_motion`` (as in ``velocity_from_previous``): where the partner had a displacement of
    its own, the mean of the two (the motion over two keyframe intervals, with half the jitter
    of one) is tested instead: a 12 m bus's centre estimates move ~0.6 m between two keyframes
    with the bus standing, above the half floor of one interval (0.375 m).
    """
    still = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    if pairs is None:
        pairs = pair_with_previous(boxes, labels, scores, prev_boxes, prev_labels, prev_scores,
                                   dt, classes, min_score=min_score, max_speed=max_speed,
                                   min_speed=min_speed)
    r, c, v, own, lab, floor, _ = pairs
    if prev_motion is not None and len(r):
        before = prev_motion.to(v.device, v.dtype)[c]
        v = torch.where(torch.isfinite(before), (v + before) / 2, v)
    if len(r):
        still[r[(v.norm(dim=1) < still_fraction * floor[lab])
                & ((v - own).norm(dim=1) > disagree)]] = True
    return still


def score_from_previous(boxes: Tensor, labels: Tensor, scores: Tensor, prev_boxes: Tensor,
                        prev_labels: Tensor, prev_scores: Tensor, dt: float, *, weight: float,
                        gate: float = 1.0) -> Tensor:
    """Scores raised for the detections seen in the previous keyframe too, global frame.

    Each detection is paired (nearest pairs first, each used once) with a previous detection of
    its class within ``gate`` metres of where its velocity puts it ``dt`` earlier, and its
    score becomes ``1 - (1 - s) * (1 - weight * s_prev)``. Returns the (N,) new scores.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    out = scores.clone()
    if len(boxes) == 0 or len(prev_boxes) == 0 or weight == 0.0:
        return out
    b, p = boxes.double(), prev_boxes.to(boxes.device).double()
    back = b[:, :2] - torch.nan_to_num(b[:, 7:9]) * dt
    dist = torch.cdist(back, p[:, :2])
    ok = (labels.to(boxes.device)[:, None] == prev_labels.to(boxes.device)[None]) & (dist <= gate)
    r, c = _nearest_pairs(torch.where(ok, dist, torch.full_like(dist, math.inf)))
    out[r] = (1.0 - (1.0 - scores[r].double()) * (1.0 - weight * prev_scores.double()[c])).to(
        out.dtype)
    return out


@dataclass
class TemporalStep:
    """The stateful step over a sequence of frames (``perception eval``; any replay in order).

    Call it once per frame, in time order, with the frame's detections in its ego frame; it
    remembers the last frame of each scene (its scores as the network gave them). Frames of
    other scenes in between are fine.

    Args:
        classes: class names of the labels.
        velocity: run ``velocity_from_previous`` (``model.temporal_velocity``).
        still: run ``still_from_previous`` (``model.temporal_still``): a still detection's
            velocity becomes 0 and a moving attribute the family's ``STILL_ATTRIBUTE``.
        score_weight: > 0 runs ``score_from_previous`` after it with this weight
            (``model.temporal_score``).
        score_gate: metres, its ``gate``.
        max_dt: seconds; a predecessor older than this is not used.
        min_score, disagree, max_speed, min_speed: see ``velocity_from_previous``.
        confirm: m/s or None (``model.temporal_confirm``): both rules use three keyframes
            where they can, the velocity rule's ``confirm`` and the still rule's mean of two
            displacements (``prev_motion``). Each frame's displacements are remembered for it.
    """

    classes: Sequence[str]
    velocity: bool = True
    still: bool = False
    score_weight: float = 0.0
    score_gate: float = 1.0
    max_dt: float = 1.0
    min_score: float = 0.3
    disagree: float = 1.0
    max_speed: dict | None = None
    min_speed: dict | None = None
    confirm: float | None = None
    _last: dict = field(default_factory=dict, repr=False)

    def __call__(self, scene: str, timestamp: int, global_T_ego: Tensor,
                 dets: Detections) -> Detections:
        """``dets`` (ego frame of the sample at ``timestamp`` µs) with velocities and headings
        from the scene's previous frame; the frame is remembered for the next call."""
        T = global_T_ego.to("cpu", torch.float64)
        glob = dets.boxes.to("cpu").to(torch.float64).transform(T).tensor
        labels, scores = dets.labels.cpu(), dets.scores.cpu()
        prev = self._last.get(scene)
        out = dets
        dt = (timestamp - prev[0]) / 1e6 if prev is not None else 0.0
        use = prev is not None and 0 < dt <= self.max_dt
        # Each detection's displacement since its partner in the previous frame (NaN: none).
        motion = torch.full((len(glob), 2), math.nan, dtype=torch.float64)
        if use and (self.velocity or self.still):
            rule_args = (glob, labels, scores, *prev[1:4], dt, self.classes)
            # One pairing, by the network's velocities, for both rules (which then never touch
            # the same box: moving is at least the class's floor, still below half of it; with
            # ``confirm`` the still rule's mean of two displacements can be below it where the
            # last one is above, and the still rule, run second, has the last word).
            pairs = pair_with_previous(*rule_args, min_score=self.min_score,
                                       max_speed=self.max_speed, min_speed=self.min_speed)
            motion[pairs.rows] = pairs.velocity
        if use and self.velocity:
            new, moving = velocity_from_previous(*rule_args, disagree=self.disagree, pairs=pairs,
                                                 prev_motion=prev[4], confirm=self.confirm)
            if bool(moving.any()):
                ego = Boxes3D(new).transform(torch.linalg.inv(T)).tensor
                boxes = out.boxes.tensor.clone()
                idx = torch.nonzero(moving).squeeze(1).to(boxes.device)
                boxes[idx] = ego[moving].to(boxes.device, boxes.dtype)
                attrs = out.attributes
                if attrs is not None:
                    attrs = attrs.clone()
                    for i in idx.tolist():
                        prefix = attribute_prefix(self.classes[int(dets.labels[i])])
                        if prefix is not None:
                            attrs[i] = _MOVING[prefix]
                out = replace(out, boxes=Boxes3D(boxes), attributes=attrs)
                glob = new
        if use and self.still:
            still = still_from_previous(*rule_args, disagree=self.disagree, pairs=pairs,
                                        prev_motion=None if self.confirm is None else prev[4])
            if bool(still.any()):
                idx = torch.nonzero(still).squeeze(1)
                boxes = out.boxes.tensor.clone()
                boxes[idx.to(boxes.device), 7:9] = 0.0
                attrs = out.attributes
                if attrs is not None:
                    attrs = attrs.clone()
                    for i in idx.tolist():
                        prefix = attribute_prefix(self.classes[int(labels[i])])
                        if prefix is not None and int(attrs[i]) == _MOVING[prefix]:
                            attrs[i] = ATTRIBUTE_NAMES.index(STILL_ATTRIBUTE[prefix])
                out = replace(out, boxes=Boxes3D(boxes), attributes=attrs)
                glob = glob.clone()
                glob[idx, 7:9] = 0.0
        if use and self.score_weight > 0:
            new_scores = score_from_previous(glob, labels, scores, prev[1], prev[2], prev[3], dt,
                                             weight=self.score_weight, gate=self.score_gate)
            out = replace(out, scores=new_scores.to(out.scores.device, out.scores.dtype))
        if prev is None or timestamp >= prev[0]:
            self._last[scene] = (timestamp, glob, labels, scores, motion)
        return out


__all__ = ["CONFIRM_FREE", "MAX_SPEED", "MIN_SPEED", "STILL_ATTRIBUTE", "Pairs", "TemporalStep",
           "pair_with_previous", "score_from_previous", "still_from_previous",
           "velocity_from_previous"]
