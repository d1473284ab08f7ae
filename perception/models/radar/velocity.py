"""Radar velocity refinement: each detected vehicle's speed from the Doppler of its radar returns.

A radar return measures one number about the object it hit: the radial component of its
velocity, ``r = v . u`` (``u`` the unit vector from the sensor to the return; the ego motion is
already compensated in ``vx_comp, vy_comp = r * u``). One return cannot give a 2D velocity, but a
vehicle moves along its heading ``h``: ``v = s * h``, so each return gives its own estimate of
the signed speed, ``s = r / (h . u)``, well conditioned where the line of sight is within ~60
degrees of the heading (traffic ahead, behind, oncoming, turning in front). The largest group
of agreeing estimates among a box's moving returns is robust to the static clutter and to the
neighbours' returns that fall inside it.

The network already reads radar velocity (``RadarEncoder`` passes it to the BEV map), but at the
budgets we train it learns speed late and weakly (docs/training.md, "Why velocity and heading
still lag"): it predicts moving trucks at a few percent of their speed. This step is plain
measurement, no learning, and runs after decoding in ``FusionDetector.predict`` when the model
has radar and the frame uses it (``model.radar.refine_velocity``).

It also settles the front/back ambiguity of a heading: a vehicle whose measured speed along its
predicted heading is clearly negative is driving the other way, so its yaw turns by pi (vehicles
drive forwards; the velocity vector itself is unchanged by the turn). And a box measured as
moving gets the attribute that says so (vehicle.moving, cycle.with_rider).

The converse, standing vehicles (``still_returns``, ``model.radar.still_returns``): a box that
holds no moving return at all, and static ones seen along its heading, where a moving vehicle
would show its speed, stands. The network, which reads the radar's velocity channels over the
whole neighbourhood, gives parked buses and trucks beside traffic a speed (on the 24-scene
synthetic val set 112 of 363 matched standing buses kept more than 1 m/s after the temporal
steps); their own returns say 0. Static returns alone prove little (the ground and clutter
inside a moving bus's footprint return ~0 too: 19 on average there), so it is the absence of
any moving return that decides, and a box seen from the side (line of sight across the
heading, where motion shows no Doppler) is never measured.

Boxes it cannot measure (fewer than ``min_returns`` agreeing moving returns with a line of sight
close enough to the heading) keep the network's velocity and heading. The known failure: a
parked vehicle's box that catches two agreeing moving returns not its own (a neighbour driving
close alongside, a multipath ghost seen twice in one sweep) takes their speed. Seen on a few
trailers and construction vehicles of the 7-scene val set; the guards tried (the moving returns
must outnumber the box's static ones, a tighter side margin, three returns instead of two, two
sweeps or sensors) cost more on moving cars than they saved there (docs/results.md).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor

from perception.models.temporal import STILL_ATTRIBUTE
from perception.structures.boxes import Boxes3D
from perception.structures.instances import Detections
from perception.structures.labels import (
    ATTRIBUTE_NAMES,
    CYCLE_CLASSES,
    VEHICLE_CLASSES,
    attribute_prefix,
)

# Classes that move along their heading (and forwards): the ones refined.
REFINED_CLASSES = VEHICLE_CLASSES + CYCLE_CLASSES
# The radar's own dynamic property (nuScenes ``dyn_prop``) of returns that may measure a moving
# object: 0 moving, 2 oncoming, 6 crossing moving. Measured on the real scene-0916 (every second
# keyframe, one sweep): of the returns with |Doppler| >= 1 m/s inside *static* boxes, 77 of 80
# are state 4 ("unknown", the sensor's invalid clusters) and 2 are state 2; inside moving boxes
# 193 of 218 are in these three states. Without this filter, 17 parked cars and trucks there
# were "measured" at 0.9-4 m/s.
MOVING_STATES = (0, 2, 6)
# The attribute a box measured as moving gets (a moving cycle has a rider).
_MOVING = {"vehicle.": ATTRIBUTE_NAMES.index("vehicle.moving"),
           "cycle.": ATTRIBUTE_NAMES.index("cycle.with_rider")}


def refine_velocity(dets: Detections, points: Tensor, fields: Sequence[str],
                    classes: Sequence[str], *, margin: float = 0.5, min_returns: int = 2,
                    min_cos: float = 0.5, moving_speed: float = 0.5,
                    moving_states: Sequence[int] = MOVING_STATES, agree: float = 1.0,
                    flip_speed: float = 1.0, still_returns: int = 0) -> Detections:
    """Velocities (and headings) of ``dets``' vehicles from the radar returns inside their boxes.

    A box is measured from its *moving* returns only: the static world (road, kerbs, clutter)
    returns ~0 everywhere, inside a moving car's footprint too, so static returns say nothing
    about the box. Among the moving returns the largest group that agrees within ``agree`` m/s
    wins (a neighbour in the next lane brings its own group); a tie goes to the group nearest
    the network's own speed. A box with no such group keeps the network's velocity.

    Args:
        dets: one frame's detections (ego frame).
        points: (R, C) the frame's radar returns (ego frame), columns named by ``fields``, which
            must include x, y, vx_comp, vy_comp (and may include time_lag: an older return of a
            moving object lies ``speed * time_lag`` behind it, which is undone before testing
            whether it falls in the box).
        classes: class names of ``dets.labels``.
        margin: metres added around each box when collecting returns.
        min_returns: agreeing moving returns needed to measure a box.
        min_cos: a return is used only if its line of sight is within ``acos(min_cos)`` of the
            heading (else ``r / cos`` amplifies its noise).
        moving_speed: m/s; returns with a smaller radial speed count as static.
        moving_states: where the returns carry the sensor's ``dyn_prop``, only these count as
            moving (see ``MOVING_STATES``).
        agree: m/s; the width of a group of returns that measure the same speed.
        flip_speed: m/s; a measured speed below ``-flip_speed`` turns the box's yaw by pi, and a
            measured speed above it in magnitude sets the moving attribute (when ``dets`` has
            attributes).
        still_returns: > 0: a box with no moving return inside and at least this many static
            returns (radial speed below ``moving_speed``) whose line of sight is within
            ``acos(min_cos)`` of its heading is measured standing: where its velocity is
            faster than ``flip_speed`` it becomes 0, and a moving attribute its family's
            ``STILL_ATTRIBUTE``. 0: off.
    Returns:
        Detections with the refined boxes and attributes (same order, scores, labels).
    """
    missing = [f for f in ("x", "y", "vx_comp", "vy_comp") if f not in fields]
    if missing:
        raise ValueError(f"radar points lack fields {missing} (have {tuple(fields)})")
    vehicle = torch.tensor([c in REFINED_CLASSES for c in classes], dtype=torch.bool)
    sel = torch.nonzero(vehicle[dets.labels.cpu()]).squeeze(1).to(dets.boxes.tensor.device)
    if len(sel) == 0 or len(points) == 0:
        return dets
    boxes = dets.boxes.tensor
    pts = points.to(boxes.device, torch.float32)
    xy = pts[:, [fields.index("x"), fields.index("y")]]
    comp = pts[:, [fields.index("vx_comp"), fields.index("vy_comp")]]
    # Signed: a radar sweep may end a few ms after the sample's reference time (negative lag).
    lag = (pts[:, fields.index("time_lag")] if "time_lag" in fields
           else pts.new_zeros(len(pts)))
    # Line of sight: the direction of the Doppler vector (parallel to the sensor-to-return ray),
    # pointing away from the ego; the signed radial speed along it.
    speed = comp.norm(dim=1)
    moving = speed >= moving_speed
    if "dyn_prop" in fields:
        state = pts[:, fields.index("dyn_prop")].round().long()
        moving &= torch.isin(state, torch.tensor(tuple(moving_states), device=state.device))
    still_rows = None
    if still_returns > 0:
        still_rows = _still_boxes(boxes[sel].float(), xy, moving, speed < moving_speed,
                                  still_returns, min_cos, margin)
    ray = comp[moving] / speed[moving, None]
    ray = ray * torch.where((ray * xy[moving]).sum(1) < 0, -1.0, 1.0)[:, None]
    radial = (comp[moving] * ray).sum(1)
    xy, lag = xy[moving], lag[moving]
    if len(xy) == 0:
        return _set_still(dets, sel, still_rows, classes, flip_speed)

    b = boxes[sel].float()
    heading, d, along, across = _box_frame(b, xy)
    cos = heading @ ray.T                                                      # (N, R)
    usable = cos.abs() >= min_cos
    estimate = radial[None] / torch.where(usable, cos, torch.ones_like(cos))   # (N, R) speed
    # Undo the motion since the return was taken: it lies estimate * lag behind the box.
    along = along + estimate * lag[None]
    inside = (usable & (along.abs() <= b[:, 3:4] / 2 + margin)
              & (across.abs() <= b[:, 4:5] / 2 + margin))
    # A return inside several boxes belongs to the nearest centre.
    dist = torch.where(inside, d.norm(dim=-1), torch.full_like(along, math.inf))
    inside &= torch.zeros_like(inside).scatter_(0, dist.argmin(0)[None], True)

    out = boxes.clone()
    attrs = None if dets.attributes is None else dets.attributes.clone()
    own = (b[:, 7:9] * heading).sum(1)                                         # network speed
    for j in torch.nonzero(inside.sum(1) >= min_returns).squeeze(1).tolist():
        s_j = estimate[j][inside[j]]
        support = ((s_j[:, None] - s_j[None]).abs() <= agree).sum(1)
        best = support == support.max()
        centre = s_j[best][(s_j[best] - own[j]).abs().argmin()]
        group = s_j[(s_j - centre).abs() <= agree]
        if len(group) < min_returns:
            continue
        s = group.median()
        row = sel[j]
        out[row, 7:9] = (s * heading[j]).to(out.dtype)
        if s < -flip_speed:
            out[row, 6] = torch.remainder(out[row, 6] + 2 * math.pi, 2 * math.pi) - math.pi  # + pi
        if attrs is not None and s.abs() > flip_speed:
            attrs[row] = _MOVING[attribute_prefix(classes[int(dets.labels[row])])]
    return _set_still(replace(dets, boxes=Boxes3D(out), attributes=attrs), sel, still_rows,
                      classes, flip_speed)


def _box_frame(b: Tensor, xy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Boxes ``b`` (N, 9) against returns ``xy`` (R, 2): each box's unit heading (N, 2), the
    offsets of the returns from its centre (N, R, 2) and their components along and across its
    heading (N, R) each."""
    heading = torch.stack([torch.cos(b[:, 6]), torch.sin(b[:, 6])], 1)
    d = xy[None] - b[:, None, :2]
    along = (d * heading[:, None]).sum(-1)
    across = d[..., 0] * -heading[:, None, 1] + d[..., 1] * heading[:, None, 0]
    return heading, d, along, across


def _still_boxes(b: Tensor, xy: Tensor, moving: Tensor, static: Tensor, min_static: int,
                 min_cos: float, margin: float) -> Tensor:
    """(N,) bool: the boxes ``b`` that hold no moving return (whatever its line of sight) and
    at least ``min_static`` static ones whose line of sight is within ``acos(min_cos)`` of the
    box's heading, along which a vehicle that moved would show it."""
    heading, _, along, across = _box_frame(b, xy)
    inside = (along.abs() <= b[:, 3:4] / 2 + margin) & (across.abs() <= b[:, 4:5] / 2 + margin)
    # A static return has no Doppler direction: its line of sight is the ray from the ego
    # origin (the radars sit within ~2.5 m of it; the boxes measured are metres away).
    ray = xy / xy.norm(dim=1, keepdim=True).clamp_min(1e-6)
    usable = (heading @ ray.T).abs() >= min_cos
    n_moving = (inside & moving[None]).sum(1)
    n_static = (inside & usable & static[None]).sum(1)
    return (n_moving == 0) & (n_static >= min_static)


def _set_still(dets: Detections, sel: Tensor, still_rows: Tensor | None,
               classes: Sequence[str], min_speed: float) -> Detections:
    """``dets`` with the boxes ``sel[still_rows]`` that move faster than ``min_speed`` stopped:
    velocity 0, and a moving attribute becomes its family's ``STILL_ATTRIBUTE``."""
    if still_rows is None or not bool(still_rows.any()):
        return dets
    boxes = dets.boxes.tensor.clone()
    rows = sel[still_rows]
    rows = rows[boxes[rows, 7:9].norm(dim=1) > min_speed]
    boxes[rows, 7:9] = 0.0
    attrs = None if dets.attributes is None else dets.attributes.clone()
    if attrs is not None:
        for r in rows.tolist():
            prefix = attribute_prefix(classes[int(dets.labels[r])])
            if int(attrs[r]) == _MOVING[prefix]:
                attrs[r] = ATTRIBUTE_NAMES.index(STILL_ATTRIBUTE[prefix])
    return replace(dets, boxes=Boxes3D(boxes), attributes=attrs)
