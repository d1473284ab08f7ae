"""Actor classes of the synthetic world: nuScenes categories, box sizes and the parts an actor is made of.

Parts are built in the actor's own frame (x forward along the box length l, y left along the width
w, z up from the ground) and then clamped into the annotation box shrunk by ``PART_MARGIN`` plus a
small numerical guard, so the containment guarantee of the contract holds whatever the template
asks for. Sizes are nuScenes-like: the means and spreads of the real annotations, per category.
"""
from __future__ import annotations

import numpy as np

from .geometry import MATERIAL

# Parts lie at least this far inside every face of their annotation box (the contract's margin).
PART_MARGIN = 0.03
# Extra guard so that float rounding in the global transform never eats into the margin.
_GUARD = 0.004

ATTRIBUTES = (
    "pedestrian.moving", "pedestrian.sitting_lying_down", "pedestrian.standing",
    "cycle.with_rider", "cycle.without_rider",
    "vehicle.moving", "vehicle.parked", "vehicle.stopped",
)
ATTR = {name: i for i, name in enumerate(ATTRIBUTES)}
NO_ATTR = -1

# (mean l, w, h), (std l, w, h): the real nuScenes annotation statistics, roughly.
SIZE_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "vehicle.car": ((4.63, 1.95, 1.73), (0.40, 0.13, 0.20)),
    "vehicle.truck": ((6.9, 2.5, 2.9), (1.8, 0.25, 0.55)),
    "vehicle.bus.rigid": ((11.0, 2.95, 3.5), (0.9, 0.08, 0.2)),
    "vehicle.bus.bendy": ((17.5, 2.95, 3.3), (0.8, 0.08, 0.15)),
    "vehicle.trailer": ((12.0, 2.9, 3.9), (2.5, 0.15, 0.35)),
    "vehicle.construction": ((6.4, 2.8, 3.2), (1.3, 0.35, 0.5)),
    "human.pedestrian.adult": ((0.73, 0.67, 1.77), (0.12, 0.08, 0.09)),
    "human.pedestrian.child": ((0.52, 0.50, 1.25), (0.08, 0.06, 0.12)),
    "human.pedestrian.construction_worker": ((0.75, 0.70, 1.78), (0.12, 0.08, 0.08)),
    "human.pedestrian.police_officer": ((0.73, 0.68, 1.80), (0.10, 0.08, 0.07)),
    "vehicle.motorcycle": ((2.1, 0.77, 1.47), (0.2, 0.10, 0.15)),
    "vehicle.bicycle": ((1.7, 0.6, 1.28), (0.12, 0.08, 0.12)),
    "movable_object.trafficcone": ((0.41, 0.41, 1.07), (0.05, 0.05, 0.15)),
    "movable_object.barrier": ((0.50, 2.5, 0.98), (0.12, 0.35, 0.08)),
    "static_object.bicycle_rack": ((3.0, 2.0, 1.2), (0.0, 0.0, 0.0)),  # sized from its bicycles
    "movable_object.debris": ((0.6, 0.5, 0.3), (0.2, 0.15, 0.1)),
    "animal": ((0.85, 0.35, 0.6), (0.15, 0.06, 0.1)),
}
# Hard bounds per category so that the normal tails never produce absurd boxes.
SIZE_BOUNDS = {
    "vehicle.car": ((3.4, 1.6, 1.35), (5.6, 2.25, 2.3)),
    "vehicle.truck": ((4.8, 1.9, 1.9), (10.5, 2.9, 4.0)),
    "vehicle.bus.rigid": ((9.0, 2.7, 3.0), (13.0, 3.1, 4.2)),
    "vehicle.bus.bendy": ((16.0, 2.7, 3.0), (19.0, 3.1, 3.7)),
    "vehicle.trailer": ((7.0, 2.5, 3.0), (16.5, 3.2, 4.5)),
    "vehicle.construction": ((4.5, 2.2, 2.4), (9.0, 3.4, 4.2)),
    "human.pedestrian.adult": ((0.45, 0.45, 1.55), (1.0, 0.9, 2.0)),
    "human.pedestrian.child": ((0.35, 0.35, 0.9), (0.7, 0.65, 1.5)),
    "human.pedestrian.construction_worker": ((0.45, 0.45, 1.6), (1.0, 0.9, 2.0)),
    "human.pedestrian.police_officer": ((0.45, 0.45, 1.6), (1.0, 0.9, 2.0)),
    "vehicle.motorcycle": ((1.7, 0.55, 1.1), (2.5, 1.0, 1.8)),
    "vehicle.bicycle": ((1.4, 0.45, 1.0), (2.0, 0.8, 1.9)),
    "movable_object.trafficcone": ((0.3, 0.3, 0.55), (0.55, 0.55, 1.3)),
    "movable_object.barrier": ((0.3, 1.5, 0.8), (0.8, 3.2, 1.2)),
    "static_object.bicycle_rack": ((1.0, 1.0, 0.5), (10.0, 3.0, 1.5)),
    "movable_object.debris": ((0.2, 0.2, 0.1), (1.2, 1.0, 0.6)),
    "animal": ((0.5, 0.2, 0.35), (1.3, 0.5, 0.9)),
}

# Realistic car paints, weighted as on real roads (white, black, grey and silver dominate).
CAR_COLORS = np.array([
    (235, 235, 232), (20, 20, 24), (150, 152, 156), (190, 192, 195), (95, 98, 102),
    (25, 45, 95), (140, 20, 25), (60, 85, 60), (120, 90, 60), (200, 170, 40), (70, 110, 160),
], dtype=np.uint8)
CAR_COLOR_P = np.array([0.24, 0.18, 0.16, 0.14, 0.08, 0.07, 0.06, 0.02, 0.02, 0.01, 0.02])
TRUCK_COLORS = np.array([(240, 240, 240), (200, 40, 30), (30, 70, 150), (230, 200, 40),
                         (90, 95, 100), (40, 110, 60)], dtype=np.uint8)
BUS_COLORS = np.array([(235, 235, 230), (190, 30, 35), (40, 130, 70), (240, 190, 20),
                       (30, 80, 160)], dtype=np.uint8)
CLOTHES = np.array([(20, 20, 25), (40, 50, 90), (200, 200, 200), (120, 30, 30), (60, 90, 60),
                    (150, 130, 100), (90, 90, 95), (200, 160, 40), (170, 90, 140),
                    (230, 230, 225)], dtype=np.uint8)
SKIN = np.array([(235, 200, 170), (200, 150, 110), (140, 95, 65), (90, 60, 40)], dtype=np.uint8)
HI_VIS = np.array([(250, 130, 20), (220, 240, 30)], dtype=np.uint8)
BARRIER_COLORS = np.array([(240, 130, 30), (235, 235, 230), (200, 190, 60), (190, 40, 35),
                           (170, 170, 165)], dtype=np.uint8)
TIRE = (25, 25, 25)


def sample_size(rng: np.random.Generator, category: str) -> tuple[float, float, float]:
    """Annotation box (l, w, h) in metres: the category's normal, clipped to its bounds."""
    mean, std = SIZE_STATS[category]
    lo, hi = SIZE_BOUNDS[category]
    v = np.asarray(mean) + np.asarray(std) * rng.standard_normal(3)
    v = np.clip(v, lo, hi)
    return float(v[0]), float(v[1]), float(v[2])


class _Builder:
    """Collects parts given as ground-based intervals in the actor frame and clamps them inside the
    annotation box shrunk by the margin (so any template is guaranteed to honour the contract)."""

    def __init__(self, size):
        self.l, self.w, self.h = size
        self.rows: list[tuple] = []

    def box(self, x0, x1, y0, y1, z0, z1, material: str, color) -> None:
        m = PART_MARGIN + _GUARD
        hl, hw = self.l / 2 - m, self.w / 2 - m
        x0, x1 = max(x0, -hl), min(x1, hl)
        y0, y1 = max(y0, -hw), min(y1, hw)
        z0, z1 = max(z0, m), min(z1, self.h - m)
        if x1 - x0 < 0.01 or y1 - y0 < 0.01 or z1 - z0 < 0.01:
            return  # a tiny box could not be seen anyway; keep the template valid for tiny actors
        self.rows.append(((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2 - self.h / 2,
                          x1 - x0, y1 - y0, z1 - z0, MATERIAL[material], tuple(int(c) for c in color)))

    def arrays(self):
        """(offset (P,3) from the box centre, size (P,3), material (P,), color (P,3) uint8)."""
        r = self.rows
        off = np.array([x[0:3] for x in r], dtype=np.float64).reshape(-1, 3)
        size = np.array([x[3:6] for x in r], dtype=np.float64).reshape(-1, 3)
        mat = np.array([x[6] for x in r], dtype=np.int64)
        col = np.array([x[7] for x in r], dtype=np.uint8).reshape(-1, 3)
        return off, size, mat, col


def _jitter(rng, color, amount=12):
    c = np.asarray(color, dtype=np.int64) + rng.integers(-amount, amount + 1, 3)
    return np.clip(c, 0, 255)


def _wheels(b: _Builder, rng, front_x, rear_x, radius, half_w):
    # One box per axle: both wheels as a single slab, which is what a 32-beam LiDAR resolves anyway.
    for xa in (front_x, rear_x):
        b.box(xa - radius, xa + radius, -half_w, half_w, 0.0, 2 * radius, "tire", _jitter(rng, TIRE, 5))


def _person(b: _Builder, rng, x_c, z0, height, width, depth, torso_color, legs=True):
    """Legs + torso + head stacked from z0 (ground or saddle) to z0 + height."""
    skin = SKIN[rng.integers(len(SKIN))]
    leg_top = z0 + 0.47 * height if legs else z0
    if legs:
        b.box(x_c - depth / 2, x_c + depth / 2, -0.28 * width, 0.28 * width, z0, leg_top, "person",
              _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))]))
    head = min(0.24, 0.14 * height + 0.02)
    b.box(x_c - 0.22, x_c + 0.16, -0.40 * width, 0.40 * width, leg_top, z0 + height - head, "person",
          _jitter(rng, torso_color))
    b.box(x_c - 0.10, x_c + 0.10, -0.09, 0.09, z0 + height - head, z0 + height, "person", _jitter(rng, skin, 8))


def build_parts(rng: np.random.Generator, category: str, size, attribute: str | None):
    """Parts of one actor, (offset, size, material, color) arrays as :meth:`_Builder.arrays`.

    Class-distinctive layouts (1-4 parts) so a camera (and the LiDAR profile) can tell classes apart.
    """
    l, w, h = size
    b = _Builder(size)
    if category == "vehicle.car":
        paint = _jitter(rng, CAR_COLORS[rng.choice(len(CAR_COLORS), p=CAR_COLOR_P)], 8)
        r = rng.uniform(0.30, 0.36)
        body_top = rng.uniform(0.52, 0.62) * h
        b.box(-l / 2, l / 2, -w / 2 + 0.08, w / 2 - 0.08, 0.28, body_top, "vehicle", paint)
        cab_rear, cab_front = -l / 2 + rng.uniform(0.10, 0.22) * l, l / 2 - rng.uniform(0.28, 0.36) * l
        b.box(cab_rear, cab_front, -w / 2 + 0.2, w / 2 - 0.2, body_top, h, "glass", _jitter(rng, (35, 45, 55), 6))
        _wheels(b, rng, l / 2 - 0.85 - 0.02 * (l - 4.6), -l / 2 + 0.9, r, w / 2 - 0.12)
    elif category == "vehicle.truck":
        cab_l = min(rng.uniform(1.7, 2.3), 0.4 * l)
        cab_paint = _jitter(rng, TRUCK_COLORS[rng.integers(len(TRUCK_COLORS))])
        b.box(l / 2 - cab_l, l / 2, -w / 2 + 0.05, w / 2 - 0.05, 0.55, 0.85 * h, "vehicle", cab_paint)
        cargo = _jitter(rng, (225, 225, 222)) if rng.random() < 0.6 else cab_paint
        b.box(-l / 2, l / 2 - cab_l - 0.15, -w / 2, w / 2, 0.95, h, "vehicle", cargo)
        _wheels(b, rng, l / 2 - 0.9, -l / 2 + 1.4, 0.48, w / 2 - 0.1)
    elif category.startswith("vehicle.bus"):
        paint = _jitter(rng, BUS_COLORS[rng.integers(len(BUS_COLORS))])
        # Body slightly narrower than the window band so the band shows on the sides.
        b.box(-l / 2, l / 2, -w / 2 + 0.03, w / 2 - 0.03, 0.35, h, "vehicle", paint)
        b.box(-l / 2 + 0.4, l / 2 - 0.02, -w / 2, w / 2, 1.25, h - 0.35, "glass", _jitter(rng, (30, 40, 50), 6))
        _wheels(b, rng, l / 2 - 2.5, -l / 2 + 3.0, 0.5, w / 2 - 0.1)
    elif category == "vehicle.trailer":
        paint = _jitter(rng, TRUCK_COLORS[rng.integers(len(TRUCK_COLORS))])
        b.box(-l / 2, l / 2, -w / 2, w / 2, 1.15, h, "vehicle", paint)
        b.box(-l / 2 + 0.8, -l / 2 + 3.4, -w / 2 + 0.1, w / 2 - 0.1, 0.0, 1.05, "tire", _jitter(rng, TIRE, 5))
        b.box(l / 2 - 3.0, l / 2 - 2.7, -w / 2 + 0.3, w / 2 - 0.3, 0.0, 1.15, "pole", (90, 90, 90))
    elif category == "vehicle.construction":
        yellow = _jitter(rng, (235, 180, 20) if rng.random() < 0.8 else (230, 110, 20))
        b.box(-l / 2, l / 2, -w / 2, w / 2, 0.0, 0.75, "tire", _jitter(rng, TIRE, 5))  # tracks/wheels
        b.box(-l / 2, 0.2 * l, -w / 2 + 0.05, w / 2 - 0.05, 0.75, 0.55 * h, "vehicle", yellow)
        b.box(-0.15 * l, 0.2 * l, -w / 2 + 0.35, w / 2 - 0.35, 0.55 * h, h, "glass", _jitter(rng, (35, 45, 55), 6))
        b.box(0.2 * l, l / 2, -0.3, 0.3, 0.3, 0.8 * h, "vehicle", yellow)  # boom / bucket
    elif category.startswith("human.pedestrian"):
        torso = CLOTHES[rng.integers(len(CLOTHES))]
        if category.endswith("construction_worker"):
            torso = HI_VIS[rng.integers(len(HI_VIS))]
        elif category.endswith("police_officer"):
            torso = (30, 40, 80)
        if attribute == "pedestrian.sitting_lying_down":
            # Sitting: thighs forward at seat height, torso and head above.
            b.box(-l / 2, l / 2, -0.3 * w, 0.3 * w, 0.0, 0.45 * h, "person",
                  _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))]))
            _person(b, rng, -0.1 * l, 0.45 * h, 0.55 * h, w, 0.3, torso, legs=False)
        else:
            _person(b, rng, 0.0, 0.0, h, w, 0.5 * l, torso)
    elif category == "vehicle.bicycle":
        frame = _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))])
        b.box(-l / 2, l / 2, -0.07, 0.07, 0.0, min(1.0, 0.8 * h), "bicycle", frame)
        b.box(l / 2 - 0.55, l / 2 - 0.35, -w / 2, w / 2, min(0.95, 0.72 * h), min(1.08, 0.85 * h), "bicycle", (40, 40, 40))
        if attribute == "cycle.with_rider":
            _person(b, rng, -0.1, 0.85, h - 0.85, w, 0.4, CLOTHES[rng.integers(len(CLOTHES))], legs=False)
    elif category == "vehicle.motorcycle":
        paint = _jitter(rng, CAR_COLORS[rng.choice(len(CAR_COLORS), p=CAR_COLOR_P)])
        b.box(-l / 2, l / 2, -0.08, 0.08, 0.0, 0.62, "tire", _jitter(rng, TIRE, 5))
        b.box(-l / 2 + 0.25, l / 2 - 0.2, -0.25, 0.25, 0.35, 1.0, "vehicle", paint)
        if attribute == "cycle.with_rider":
            _person(b, rng, -0.2, 0.75, h - 0.75, w, 0.45, CLOTHES[rng.integers(len(CLOTHES))], legs=False)
        else:
            b.box(l / 2 - 0.5, l / 2 - 0.35, -w / 2, w / 2, 0.95, 1.1, "vehicle", (40, 40, 40))  # handlebar
    elif category == "movable_object.trafficcone":
        orange = _jitter(rng, (240, 110, 20), 10)
        b.box(-l / 2, l / 2, -w / 2, w / 2, 0.0, 0.05, "traffic_cone", (30, 30, 30))
        b.box(-0.3 * l, 0.3 * l, -0.3 * w, 0.3 * w, 0.05, 0.55 * h, "traffic_cone", orange)
        b.box(-0.15 * l, 0.15 * l, -0.15 * w, 0.15 * w, 0.55 * h, h, "traffic_cone", orange)
    elif category == "movable_object.barrier":
        c = BARRIER_COLORS[rng.integers(len(BARRIER_COLORS))]
        b.box(-l / 2, l / 2, -w / 2, w / 2, 0.0, 0.15, "barrier", _jitter(rng, c))
        b.box(-0.3 * l, 0.3 * l, -w / 2, w / 2, 0.15, h, "barrier", _jitter(rng, c))
    elif category == "static_object.bicycle_rack":
        b.box(-l / 2, l / 2, -0.05, 0.05, 0.0, min(0.8, h), "pole", (130, 130, 135))
    elif category == "movable_object.debris":
        b.box(-l / 2, l / 2, -w / 2, w / 2, 0.0, h, "building", _jitter(rng, (120, 100, 80), 25))
    elif category == "animal":
        fur = _jitter(rng, (120, 90, 60), 30)
        b.box(-l / 2, 0.25 * l, -w / 2, w / 2, 0.3 * h, 0.8 * h, "person", fur)
        b.box(-0.35 * l, 0.2 * l, -0.3 * w, 0.3 * w, 0.0, 0.3 * h, "person", fur)
        b.box(0.25 * l, l / 2, -0.3 * w, 0.3 * w, 0.55 * h, h, "person", fur)
    else:  # pragma: no cover - every category above has a template
        raise ValueError(f"no part template for {category}")
    return b.arrays()
