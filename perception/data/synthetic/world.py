"""The synthetic scenario: a road layout, static structures, the ego drive and actors of all classes.

``build_scenario(config, seed)`` draws one scene (deterministic for its inputs); the returned
:class:`Scenario` answers what the sensor models and the nuScenes writer ask: ego pose, actor
states and annotation boxes, a :class:`Snapshot` of everything solid at any time, the ground raster
and the drivable map mask. See docs/dev/synthetic_contract.md.

How it is built (all in a local frame, then shifted to positive global coordinates):
1. layout (layout.py): straight / curved road, 4-way intersection or T-junction with lanes,
   parking strips, verges, walkways, zebra crossings and fixed-time signals;
2. the ego route and its free-flow reach fix the world extent (ego path + ``ground_margin_m``);
3. static structures along the roads (buildings, walls, street lights, signs, trees);
4. actors: moving traffic (intelligent-driver car following on lane routes, obeying signals;
   the ego is one of the simulated vehicles so it queues like the others), parked vehicles, a work
   zone with cones, barriers, a construction vehicle and workers, pedestrians walking, crossing,
   standing and sitting, parked and ridden cycles, a bicycle rack, distractors;
5. a conflict filter: every actor's footprint is checked against every other's (and the ego's
   and the buildings') at every trajectory knot; the lower-priority actor of an overlapping pair is
   dropped and the traffic is re-simulated, so nothing overlaps at any time.
Trajectories are knots every ``sample_dt_s`` with exact velocities; states between knots come from
cubic Hermite interpolation, so the reported velocity is the exact derivative of the position.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from .actors import ATTR, ATTRIBUTES, NO_ATTR, PART_MARGIN, build_parts, sample_size
from .geometry import GroundMap, MATERIAL, Parts, Snapshot
from .layout import Path, box_polygon, build_layout, build_static, paint_ground

__all__ = ["PART_MARGIN", "WorldConfig", "ActorInfo", "ActorStates", "Scenario", "build_scenario",
           "EGO_SIZE", "EGO_REAR_AXLE_TO_CENTER"]

# The ego (a Renault Zoe as in nuScenes): box l, w, h in metres and the distance from the ego frame
# origin (rear axle centre) forward to the box centre.
EGO_SIZE = (4.08, 1.73, 1.56)
EGO_REAR_AXLE_TO_CENTER = 1.35

LOCATIONS = ("boston-seaport", "singapore-onenorth", "singapore-queenstown", "singapore-hollandvillage")
LAYOUTS = ("straight", "curved", "intersection", "t_junction")


@dataclass(frozen=True)
class WorldConfig:
    """Scenario knobs. Probabilities are per scene unless stated otherwise."""

    duration_s: float = 20.0            # scene length, s
    actor_density: float = 1.0          # scales the number of actors of every kind
    layout_weights: tuple[float, float, float, float] = (0.25, 0.2, 0.35, 0.2)  # as LAYOUTS
    location_weights: tuple[float, float, float, float] = (0.4, 0.3, 0.15, 0.15)  # as LOCATIONS
    p_midblock_crossing: float = 0.5    # straight/curved roads: signalised zebra crossing
    p_work_zone: float = 0.55           # lane closure with cones, barriers, maybe machinery
    p_sidewalk_barriers: float = 0.6    # a row of barriers along a walkway (building site)
    p_bicycle_rack: float = 0.25        # a rack with parked bicycles (filtered by the devkit eval)
    p_distractors: float = 0.35         # debris / an animal: non-detection categories
    p_ego_slow: float = 0.3             # ego crawls at 2-7 m/s instead of cruising
    p_ego_red: float = 0.5              # junction scenes: ego's signal is red when it arrives
    ground_margin_m: float = 100.0      # ground raster around the ego's path, m
    map_origin_margin_m: float = 100.0  # the raster starts this far from global (0, 0), m
    ground_resolution_m: float = 0.1    # GroundMap cell size, m (the map PNG is always 0.1 m)
    sample_dt_s: float = 0.1            # trajectory knot spacing, s
    actor_radius_m: float = 75.0        # static/parked actors and walkers only this close to the ego path
    cover_classes: bool = False         # add what it takes for every detection class to be seen


@dataclass(frozen=True)
class ActorInfo:
    index: int                          # == Parts.instance of its parts
    category: str                       # nuScenes category name
    size: tuple[float, float, float]    # annotation box l, w, h (m), constant over the scene


@dataclass
class ActorStates:
    """All actors at one time, global frame. A actors."""

    center: np.ndarray                  # (A, 3) annotation box centre, m
    yaw: np.ndarray                     # (A,) rad
    velocity: np.ndarray                # (A, 3) m/s
    attribute: list                     # nuScenes attribute name or None, per actor
    present: np.ndarray                 # (A,) bool


# ------------------------------------------------------------------------------------------------
# Internal actor record used while building
# ------------------------------------------------------------------------------------------------
@dataclass
class _Actor:
    category: str
    size: tuple[float, float, float]
    priority: int                        # conflict resolution: the lower one is dropped
    attribute: str | None = None         # fixed attribute, or None and decided per knot
    kind: str = "static"                 # static / idm / walker
    xy: np.ndarray | None = None         # static pose
    yaw: float = 0.0
    # idm
    path: Path | None = None
    group: tuple | None = None
    s0: float = 0.0
    v0: float = 0.0
    stop_s: float = np.inf
    signal: int = -1
    # walkers: s(t) on path given per knot
    s_knots: np.ndarray | None = None
    v_knots: np.ndarray | None = None
    # filled trajectories (K knots)
    pos: np.ndarray | None = None
    vel: np.ndarray | None = None
    yaws: np.ndarray | None = None
    attr: np.ndarray | None = None
    present: np.ndarray | None = None


_MOVING_MIX = {"vehicle.car": 0.80, "vehicle.truck": 0.085, "vehicle.bus.rigid": 0.035,
               "vehicle.bus.bendy": 0.006, "vehicle.motorcycle": 0.04, "vehicle.bicycle": 0.025,
               "vehicle.construction": 0.009}
_PARKED_MIX = {"vehicle.car": 0.78, "vehicle.truck": 0.085, "vehicle.trailer": 0.065,
               "vehicle.construction": 0.015, "vehicle.motorcycle": 0.035, "vehicle.bus.rigid": 0.02}


# Detection class -> the categories of it this world draws (the devkit's
# category_to_detection_name restricted to them; a test checks that the two agree).
DETECTION_CATEGORIES = {
    "car": ("vehicle.car",), "truck": ("vehicle.truck",),
    "bus": ("vehicle.bus.rigid", "vehicle.bus.bendy"), "trailer": ("vehicle.trailer",),
    "construction_vehicle": ("vehicle.construction",),
    "pedestrian": ("human.pedestrian.adult", "human.pedestrian.child",
                   "human.pedestrian.construction_worker", "human.pedestrian.police_officer"),
    "motorcycle": ("vehicle.motorcycle",), "bicycle": ("vehicle.bicycle",),
    "traffic_cone": ("movable_object.trafficcone",), "barrier": ("movable_object.barrier",),
}
_DETECTION_NAME = {cat: name for name, cats in DETECTION_CATEGORIES.items() for cat in cats}
# The devkit's evaluation range of each class (detection_cvpr_2019 ``class_range``), m.
EVAL_RANGE_M = {"car": 50.0, "truck": 50.0, "bus": 50.0, "trailer": 50.0,
                "construction_vehicle": 50.0, "pedestrian": 40.0, "motorcycle": 40.0,
                "bicycle": 40.0, "traffic_cone": 30.0, "barrier": 30.0}
SEEN_FRACTION = 0.6      # "seen": within this share of its class's range of the ego at some knot
_COVER_STREAM = 7        # SeedSequence entropy [seed, _COVER_STREAM]: the cover groups' randomness


def _pick(rng, mix: dict) -> str:
    keys = list(mix)
    p = np.array([mix[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _obb_overlap(c1, y1, h1, c2, y2, h2):
    """Separating-axis test of oriented rectangles, vectorized over a leading axis.
    c (N, 2) centres, y (N,) yaws, h (N, 2) half extents (along, across). Returns (N,) bool."""
    d = c2 - c1
    u1 = np.stack([np.cos(y1), np.sin(y1)], -1)
    v1 = np.stack([-u1[:, 1], u1[:, 0]], -1)
    u2 = np.stack([np.cos(y2), np.sin(y2)], -1)
    v2 = np.stack([-u2[:, 1], u2[:, 0]], -1)
    sep = np.zeros(len(d), dtype=bool)
    for a in (u1, v1, u2, v2):
        r1 = h1[:, 0] * np.abs((u1 * a).sum(-1)) + h1[:, 1] * np.abs((v1 * a).sum(-1))
        r2 = h2[:, 0] * np.abs((u2 * a).sum(-1)) + h2[:, 1] * np.abs((v2 * a).sum(-1))
        sep |= np.abs((d * a).sum(-1)) > r1 + r2
    return ~sep


class _Occupancy:
    """Footprints of things placed so far (static actors, buildings, poles): rejection sampling."""

    def __init__(self):
        self.c = np.zeros((0, 2))
        self.r = np.zeros(0)
        self.polys: list = []

    def add(self, poly):
        self.polys.append(poly)
        b = poly.bounds
        self.c = np.vstack([self.c, [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]])
        self.r = np.append(self.r, 0.5 * np.hypot(b[2] - b[0], b[3] - b[1]))

    def free(self, poly, pad=0.1, skip: int = -1) -> bool:
        b = poly.bounds
        c = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
        r = 0.5 * np.hypot(b[2] - b[0], b[3] - b[1])
        near = np.flatnonzero(np.hypot(*(self.c - c).T) < self.r + r + pad)
        g = poly.buffer(pad, 2) if pad > 0 else poly
        return not any(i != skip and g.intersects(self.polys[i]) for i in near)


# ------------------------------------------------------------------------------------------------
# Traffic: intelligent driver model on lane routes, all vehicles of all lanes stepped together
# ------------------------------------------------------------------------------------------------
_JERK = 25.0   # m/s^3


def _smooth_walk(times: np.ndarray, walking, speed: float, length: float, from_t0: bool,
                 ramp: float = 0.8):
    """Arc length and speed at ``times`` of someone walking at ``speed`` whenever walking(t) is true,
    until ``length`` is covered, with linear speed ramps of ``ramp`` seconds (smooth starts and
    stops keep the Hermite trajectory's finite differences exact). Arc length counts from the
    position at t = 0 (``from_t0``) or from the start of the walk 30 s before the scene."""
    fine_dt = 0.01
    tf = np.arange(-30.0, times[-1] + 1.0, fine_dt)
    i0 = int(round(30.0 / fine_dt))
    want = walking(tf).astype(np.float64) * speed
    cum = np.cumsum(want) * fine_dt
    if from_t0:
        cum = cum - cum[i0]
    want[cum >= length] = 0.0            # the walk is done
    k = max(1, int(round(ramp / fine_dt)))
    v = np.convolve(want, np.ones(k) / k, mode="same")
    s = np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * fine_dt)])
    if from_t0:
        s = s - s[i0]
    idx = np.clip(np.round((times - tf[0]) / fine_dt).astype(np.int64), 0, len(tf) - 1)
    return s[idx], v[idx]


def _simulate_idm(veh: list[_Actor], times: np.ndarray, signals, v_init: np.ndarray):
    """Arc length S (K, n) and speed V (K, n) of every vehicle at the knots ``times``.

    Vehicles in one group (same first lane) follow each other in their initial order (no
    overtaking); a red signal is a stopped obstacle at the stop line for vehicles that can still
    stop comfortably when it turns red (the others clear the junction, as drivers do on amber).
    """
    n = len(veh)
    K = len(times)
    dt = times[1] - times[0]
    s = np.array([a.s0 for a in veh], dtype=np.float64)
    v = v_init.astype(np.float64).copy()
    half = np.array([a.size[0] / 2 for a in veh])
    v0 = np.array([a.v0 for a in veh])
    amax = np.array([1.2 if a.category == "ego" else 1.6 if a.size[0] < 6 else 1.0 for a in veh])
    bcomf, s_min, headway = 2.0, 2.0, 1.3
    stop_s = np.array([a.stop_s for a in veh])
    sig = np.array([a.signal for a in veh])
    leader = np.full(n, -1)
    groups: dict = {}
    for i, a in enumerate(veh):
        groups.setdefault(a.group, []).append(i)
    for members in groups.values():
        order = sorted(members, key=lambda i: -s[i])
        for a_, b_ in zip(order[:-1], order[1:]):
            leader[b_] = a_
    has = leader >= 0
    lead = np.where(has, leader, 0)
    stopping = np.zeros(n, dtype=bool)
    a_prev = np.zeros(n)
    S = np.empty((K, n))
    V = np.empty((K, n))

    def idm(v, gap, dv):
        s_star = s_min + np.maximum(0.0, v * headway + v * dv / (2 * np.sqrt(amax * bcomf)))
        return amax * (1 - (v / np.maximum(v0, 0.1)) ** 4 - (s_star / np.maximum(gap, 0.2)) ** 2)

    for k in range(K):
        S[k], V[k] = s, v
        gap = np.where(has, s[lead] - half[lead] - s - half, 1e6)
        acc = idm(v, gap, np.where(has, v - v[lead], 0.0))
        if signals is not None:
            green = np.array([signals.is_green(0, times[k]), signals.is_green(1, times[k])])
            red = (sig >= 0) & ~green[np.maximum(sig, 0)]
            dist = stop_s - (s + half)
            stopping |= red & (dist > v ** 2 / (2 * 3.0)) & (dist > -0.2)
            stopping &= red
            acc = np.where(stopping, np.minimum(acc, idm(v, dist + s_min * 0.5, v)), acc)
        # Bounded jerk: the acceleration changes by at most JERK * dt between knots, so the
        # (C1) trajectory's finite differences stay within ~1e-3 m/s of the exact velocity.
        acc = np.clip(np.clip(acc, -7.0, amax), a_prev - _JERK * dt, a_prev + _JERK * dt)
        v_new = np.maximum(v + acc * dt, 0.0)
        s = s + 0.5 * (v + v_new) * dt
        a_prev = (v_new - v) / dt
        v = v_new
    return S, V


# ------------------------------------------------------------------------------------------------
# The scenario
# ------------------------------------------------------------------------------------------------
class Scenario:
    """One synthetic scene. Public: actors, ground, location, description, layout_kind, duration_s."""

    def __init__(self, actors, ground, location, description, layout_kind, duration_s, dt,
                 ego, tracks, static_parts, actor_parts):
        self.actors: list[ActorInfo] = actors
        self.ground: GroundMap = ground
        self.location: str = location
        self.description: str = description
        self.layout_kind: str = layout_kind
        self.duration_s: float = duration_s
        self._dt = dt
        self._ego_pos, self._ego_vel, self._ego_yaw = ego
        (self._pos, self._vel, self._yaw, self._present, self._attr) = tracks
        self._K = self._ego_pos.shape[0]
        self._z = np.array([a.size[2] / 2 for a in actors], dtype=np.float64)
        self._static = static_parts
        (self._p_actor, self._p_off, self._p_size, self._p_mat, self._p_col) = actor_parts
        self._mask = None

    # -- time interpolation ---------------------------------------------------------------------
    def _knot(self, t_s: float):
        x = min(max(float(t_s), 0.0), (self._K - 1) * self._dt) / self._dt
        k = min(int(x), self._K - 2)
        return k, x - k

    def _hermite(self, P, Vd, k, u):
        """Cubic Hermite position and its exact time derivative between knots k and k+1."""
        dt = self._dt
        u2, u3 = u * u, u * u * u
        h00, h10, h01, h11 = 2 * u3 - 3 * u2 + 1, u3 - 2 * u2 + u, -2 * u3 + 3 * u2, u3 - u2
        d00, d10, d01, d11 = 6 * u2 - 6 * u, 3 * u2 - 4 * u + 1, -6 * u2 + 6 * u, 3 * u2 - 2 * u
        p0, p1 = P[..., k, :], P[..., k + 1, :]
        v0, v1 = Vd[..., k, :], Vd[..., k + 1, :]
        pos = h00 * p0 + h10 * dt * v0 + h01 * p1 + h11 * dt * v1
        vel = (d00 * p0 + d01 * p1) / dt + d10 * v0 + d11 * v1
        return pos, vel

    def ego_state(self, t_s: float) -> tuple[np.ndarray, float, np.ndarray]:
        """Ego pose at t_s: position (3,) of the rear axle centre on the ground (z = 0), yaw (rad),
        velocity (3,) m/s; global frame."""
        k, u = self._knot(t_s)
        p, v = self._hermite(self._ego_pos, self._ego_vel, k, u)
        yaw = (1 - u) * self._ego_yaw[k] + u * self._ego_yaw[k + 1]
        return np.array([p[0], p[1], 0.0]), float(np.angle(np.exp(1j * yaw))), np.array([v[0], v[1], 0.0])

    def _kinematics(self, t_s: float):
        k, u = self._knot(t_s)
        p, v = self._hermite(self._pos, self._vel, k, u)
        yaw = (1 - u) * self._yaw[:, k] + u * self._yaw[:, k + 1]
        present = self._present[:, k] & self._present[:, k + 1]
        A = len(self._z)
        center = np.empty((A, 3))
        center[:, :2] = p
        center[:, 2] = self._z
        vel = np.zeros((A, 3))
        vel[:, :2] = v
        return center, yaw, vel, present, (k if u < 0.5 else k + 1)

    def actor_states(self, t_s: float) -> ActorStates:
        center, yaw, vel, present, _ = self._kinematics(t_s)
        codes = self._attr[:, self._knot(t_s)[0]]
        attribute = [None if c < 0 else ATTRIBUTES[c] for c in codes]
        return ActorStates(center, np.angle(np.exp(1j * yaw)), vel, attribute, present)

    def snapshot(self, t_s: float, timestamp_us: int) -> Snapshot:
        """Static world + the present actors' parts at t_s (parts move with their actor)."""
        center, yaw, vel, present, _ = self._kinematics(t_s)
        keep = present[self._p_actor]
        ia = self._p_actor[keep]
        off = self._p_off[keep]
        c, s = np.cos(yaw[ia]), np.sin(yaw[ia])
        pc = center[ia].copy()
        pc[:, 0] += c * off[:, 0] - s * off[:, 1]
        pc[:, 1] += s * off[:, 0] + c * off[:, 1]
        pc[:, 2] += off[:, 2]
        st = self._static
        parts = Parts(
            np.concatenate([st.center, pc]), np.concatenate([st.size, self._p_size[keep]]),
            np.concatenate([st.yaw, yaw[ia]]), np.concatenate([st.velocity, vel[ia]]),
            np.concatenate([st.material, self._p_mat[keep]]), np.concatenate([st.color, self._p_col[keep]]),
            np.concatenate([st.instance, ia.astype(np.int64)]))
        return Snapshot(int(timestamp_us), parts, self.ground)

    def drivable_mask(self) -> tuple[np.ndarray, float]:
        """(H, W) uint8 map PNG (255 drivable: road and lane paint, 0 not), row 0 = the largest y,
        covering global [0, W * 0.1] x [0, H * 0.1]; and its resolution, 0.1 m."""
        if self._mask is None:
            g = self.ground
            drv = (g.ids == MATERIAL["road"]) | (g.ids == MATERIAL["lane_marking"])
            rep = int(round(g.resolution / 0.1))
            if rep > 1:
                drv = np.repeat(np.repeat(drv, rep, axis=0), rep, axis=1)
            ox, oy = int(round(g.x0 / 0.1)), int(round(g.y0 / 0.1))
            m = np.zeros((drv.shape[0] + oy, drv.shape[1] + ox), dtype=np.uint8)
            m[oy:, ox:] = drv.astype(np.uint8) * 255
            self._mask = np.ascontiguousarray(m[::-1])
        return self._mask, 0.1


# ------------------------------------------------------------------------------------------------
# Building a scenario
# ------------------------------------------------------------------------------------------------
def build_scenario(config: WorldConfig, seed: int) -> Scenario:
    """Draw one scene; identical output for identical (config, seed)."""
    return _Builder(config, seed).build()


class _Builder:
    def __init__(self, cfg: WorldConfig, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.cover_seed = np.random.SeedSequence([int(seed), _COVER_STREAM])
        self.in_racks: set[int] = set()     # id() of the bicycles parked in racks
        self.dt = float(cfg.sample_dt_s)
        self.times = np.arange(int(np.ceil((cfg.duration_s + 1.0) / self.dt)) + 1) * self.dt
        self.actors: list[_Actor] = []
        self.occ = _Occupancy()
        self.features: list[str] = []

    # ---- helpers -------------------------------------------------------------------------------
    def inside(self, xy, m=3.0):
        xmin, ymin, xmax, ymax = self.extent
        xy = np.asarray(xy)
        return ((xy[..., 0] > xmin + m) & (xy[..., 0] < xmax - m) &
                (xy[..., 1] > ymin + m) & (xy[..., 1] < ymax - m))

    def near_ego(self, xy, radius=None) -> bool:
        """Within ``radius`` of the ego's path: parked and roadside actors far from it would only
        cost sensor time (nuScenes annotates what the car passes by)."""
        radius = self.cfg.actor_radius_m if radius is None else radius
        return bool(np.min(np.hypot(*(self.ego_xy - np.asarray(xy)).T)) < radius)

    def _near_many(self, xy) -> np.ndarray:
        """(K,) bool: points within actor_radius_m of the ego path. Moving actors exist only in this
        tube around the drive: far beyond sensor range they would only cost parts."""
        e = self.ego_xy[::8]
        d2 = ((xy[:, None, :] - e[None]) ** 2).sum(-1).min(1)
        return d2 < self.cfg.actor_radius_m ** 2

    def place_static(self, category, size, xy, yaw, attribute, priority=2, pad=0.15,
                     skip=-1) -> _Actor | None:
        """Rejection-sampled static actor: returns it, or None where its footprint is taken."""
        xy = np.asarray(xy, dtype=np.float64)
        if not self.inside(xy) or not self.near_ego(xy):
            return None
        poly = box_polygon(xy[0], xy[1], size[0], size[1], yaw)
        if not self.occ.free(poly, pad, skip=skip):
            return None
        if self.ego_corridor.intersects(poly):
            return None
        self.occ.add(poly)
        a = _Actor(category, size, priority, attribute, "static", xy=xy, yaw=float(yaw))
        self.actors.append(a)
        return a

    # ---- main ----------------------------------------------------------------------------------
    def build(self) -> Scenario:
        cfg, rng = self.cfg, self.rng
        T = cfg.duration_s
        lw = np.asarray(cfg.location_weights, dtype=np.float64)
        self.location = LOCATIONS[int(rng.choice(len(LOCATIONS), p=lw / lw.sum()))]
        drive_side = 1 if self.location.startswith("boston") else -1
        w = np.asarray(cfg.layout_weights, dtype=np.float64)
        kind = LAYOUTS[int(rng.choice(len(LAYOUTS), p=w / w.sum()))]
        arm = 150.0 + 15.0 * T + cfg.ground_margin_m + 60.0
        layout, ego_opts = build_layout(rng, kind, drive_side, arm, cfg.p_midblock_crossing)
        self.layout = layout
        self._choose_ego(ego_opts)
        carriage, corridor = layout.road_polygons()
        self.carriage = carriage
        static, buildings = build_static(layout, rng, self.extent, carriage, corridor,
                                         self.ego_xy[::4], cfg.actor_radius_m)
        st_c, st_s, st_y, st_m, st_col, st_obst = static.arrays()
        self.static_arrays = (st_c, st_s, st_y, st_m, st_col)
        for i in np.flatnonzero(st_obst):
            self.occ.add(box_polygon(st_c[i, 0], st_c[i, 1], st_s[i, 0] + 0.1, st_s[i, 1] + 0.1, st_y[i]))
        self.obstacles = (st_c[st_obst, :2], st_y[st_obst], st_s[st_obst, :2] / 2)
        self.closed: set = set()
        self.density = float(cfg.actor_density)
        if rng.random() < cfg.p_work_zone:
            self._work_zone()
        self._parked()
        self._roadside_objects()
        self._traffic_spawn()
        self._pedestrians()
        self._resolve()
        if cfg.cover_classes:
            self._cover_classes()
        return self._finish(static)

    # ---- ego -----------------------------------------------------------------------------------
    def _choose_ego(self, ego_opts):
        cfg, rng, L = self.cfg, self.rng, self.layout
        T = cfg.duration_s
        ri, s_ref = ego_opts[int(rng.integers(len(ego_opts)))]
        route = L.routes[ri]
        slow = rng.random() < cfg.p_ego_slow
        limit = L.roads[route.group[0]].speed_limit
        v0 = float(rng.uniform(2.0, 7.0) if slow else rng.uniform(0.7, 1.0) * min(limit + 1.5, 15.0))
        if L.kind in ("intersection", "t_junction"):
            dist = float(rng.uniform(12.0, 25.0) + rng.uniform(0.2, 0.9) * v0 * T * 0.5)
            s0 = s_ref - dist
            t_arr = dist / max(v0, 0.5)
            sig = L.signals
            red = rng.random() < cfg.p_ego_red
            g = route.signal
            g_start = 0.0 if g == 0 else sig.green[0] + sig.all_red
            g_len = sig.green[g]
            if red:   # the ego meets the red part of the cycle on arrival
                tm = g_start + g_len + float(rng.uniform(0.1, 0.8)) * (sig.cycle - g_len)
            else:
                tm = g_start + float(rng.uniform(0.15, 0.85)) * g_len
            sig.offset = float(t_arr - tm)
            self.features.append("waiting at red light" if red else "passing junction on green")
        else:
            s0 = s_ref
            if L.signals is not None:
                self.features.append("ped crossing")
        s0 = max(s0, 5.0)
        self.ego = _Actor("ego", EGO_SIZE, 10 ** 6, None, "idm", path=route.path, group=route.group,
                          s0=s0 + EGO_REAR_AXLE_TO_CENTER, v0=v0, stop_s=route.stop_s, signal=route.signal)
        self.ego_route = route
        self.ego_xy = route.path.at(np.linspace(s0 - 5.0, s0 + v0 * (T + 1.0) + 10.0, 400))[0]
        self.features.append("slow ego" if slow else "cruising ego")
        # World extent: the ego's free-flow reach plus the margin, snapped to the raster.
        ss = np.linspace(s0 - 5.0, s0 + v0 * (T + 1.0) + 10.0, 200)
        xy, _ = route.path.at(ss)
        m, res = cfg.ground_margin_m, cfg.ground_resolution_m
        lo = np.floor((xy.min(0) - m) / res) * res
        hi = np.ceil((xy.max(0) + m) / res) * res
        self.extent = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
        # Static actors keep off the ego's lane around its reach (it cannot swerve).
        from shapely.geometry import LineString
        self.ego_corridor = LineString(xy).buffer(EGO_SIZE[1] / 2 + 0.6)

    # ---- work zone -----------------------------------------------------------------------------
    def _work_zone(self):
        """A work zone beside the traffic: on a multi-lane carriageway the kerb-side lane is closed
        (cone taper + cone line, barriers, maybe a construction vehicle and workers); where a
        direction has a single lane, the zone takes the parking strip instead so traffic still flows."""
        rng, L = self.rng, self.layout
        cands = []
        for ri, r in enumerate(L.roads):
            for forward, n in ((True, r.n_fwd), (False, r.n_bwd)):
                key = (ri, forward, n - 1)
                side = r.sf if forward else -r.sf
                if not n or key in self.ego_route.lanes:
                    continue
                if n >= 2:
                    cands.append((key, "lane"))
                elif r.park[0 if side > 0 else 1] > 0:
                    cands.append((key, "strip"))
        if not cands:
            return
        (ri, forward, i), mode = cands[int(rng.integers(len(cands)))]
        r = L.roads[ri]
        side = r.sf if forward else -r.sf
        Lz = float(rng.uniform(20.0, 45.0))
        s_lo = max(r.s_paint0 + 15.0, 20.0)
        # Near the ego's path so the sensors see it: try a few spots.
        for _ in range(30):
            s_a = float(rng.uniform(s_lo, r.path.length - Lz - 20))
            mid = r.frame(s_a + Lz / 2, 0.0)[0]
            if self.inside(mid, 20.0) and self.near_ego(mid, 45.0) and np.hypot(*mid) > L.junction_r + 10:
                break
        else:
            return
        hw = r.half_width(side)
        if mode == "lane":
            self.closed.add((ri, forward, i))
            d_in = side * i * r.lane_w                # boundary with the neighbouring lane
            d_lane = side * (i + 0.5) * r.lane_w
            width = r.lane_w + r.park[0 if side > 0 else 1]
        else:
            d_in = side * (i + 1) * r.lane_w          # the edge line between lane and strip
            d_lane = side * (hw - r.park[0 if side > 0 else 1] / 2)
            width = r.park[0 if side > 0 else 1]
        self.features.append("construction zone")
        up = -1 if forward else 1                      # upstream direction in road s
        s_up, s_dn = (s_a, s_a + Lz) if forward else (s_a + Lz, s_a)
        # Cones: a taper from the kerb side to the boundary upstream, then along the boundary.
        taper = float(rng.uniform(8.0, 14.0))
        n_t = 4
        for j in range(n_t):
            f = j / (n_t - 1)
            self._cone(r, s_up + up * taper * (1 - f), d_in + side * (0.4 + (1 - f) * (width - 0.9)))
        spacing = float(rng.uniform(3.0, 5.0))
        for s in np.arange(0, Lz, spacing)[1:]:
            self._cone(r, s_up - up * s, d_in + side * 0.4)
        if mode == "lane":
            # Barriers closing the work pit at both ends (their 2.5 m width spans the lane).
            for s in (s_up - up * 3.0, s_dn + up * 2.0):
                size = sample_size(rng, "movable_object.barrier")
                xy, h = r.frame(s, d_lane + side * 0.2)
                self.place_static("movable_object.barrier", size, xy, h, None)
        # Barrier row along the kerb side of the zone.
        if r.park[0 if side > 0 else 1] > 0 or mode == "lane":
            d_row = side * (hw - 0.55)
            s = 4.0
            while s < Lz - 3:
                size = sample_size(rng, "movable_object.barrier")
                xy, h = r.frame(s_up - up * (s + size[1] / 2), d_row)
                self.place_static("movable_object.barrier", size, xy, h + np.pi / 2, None)
                s += size[1] + 0.15
        if rng.random() < 0.75:
            size = sample_size(rng, "vehicle.construction")
            if mode == "strip":
                size = (size[0], min(size[1], width + 0.2), size[2])
            for _ in range(8):
                xy, h = r.frame(s_up - up * float(rng.uniform(4, max(4.5, Lz - size[0] - 4))),
                                d_in + side * (0.65 + size[1] / 2))
                if self.place_static("vehicle.construction", size, xy, h + (np.pi if rng.random() < 0.5 else 0),
                                     ATTR["vehicle.parked"]):
                    break
        for _ in range(int(rng.integers(1, 4))):
            size = sample_size(rng, "human.pedestrian.construction_worker")
            for _ in range(8):
                xy, h = r.frame(s_up - up * float(rng.uniform(2, Lz)),
                                d_in + side * float(rng.uniform(1.0, max(1.1, width - 0.4))))
                if self.place_static("human.pedestrian.construction_worker", size, xy,
                                     float(rng.uniform(-np.pi, np.pi)), ATTR["pedestrian.standing"], 1):
                    break

    def _cone(self, r, s, d):
        size = sample_size(self.rng, "movable_object.trafficcone")
        xy, h = r.frame(s, d)
        return self.place_static("movable_object.trafficcone", size, xy, float(self.rng.uniform(0, np.pi)), None)

    # ---- parked vehicles -------------------------------------------------------------------------
    def _parked(self):
        rng, L = self.rng, self.layout
        n_parked = 0
        for ri, r in enumerate(L.roads):
            crosses = [c[0] for c in r.crossings]
            for side in (1, -1):
                if r.park[0 if side > 0 else 1] <= 0:
                    continue
                fill = float(np.clip(rng.uniform(0.15, 0.65) * self.density, 0, 0.97))
                heading_flip = 0.0 if side == r.sf else np.pi
                s = float(rng.uniform(0, 6))
                hw = r.half_width(side)
                while s < r.path.length - 10:
                    if rng.random() > fill:
                        s += float(rng.uniform(4, 14))
                        continue
                    cat = _pick(rng, _PARKED_MIX)
                    size = sample_size(rng, cat)
                    sc = s + size[0] / 2
                    # Against the kerb; wide vehicles overhang it a little rather than the lane.
                    xy, h = r.frame(sc, side * (hw - 0.25 - size[1] / 2 + max(0.0, size[1] - r.park[0 if side > 0 else 1]) * 0.8))
                    far = np.hypot(*xy) > L.junction_r + size[0] / 2 and all(abs(sc - c) > 10 for c in crosses)
                    if far and self.inside(xy):
                        attr = ATTR["cycle.without_rider"] if cat == "vehicle.motorcycle" else ATTR["vehicle.parked"]
                        if self.place_static(cat, size, xy, h + heading_flip, attr):
                            n_parked += 1
                    s += size[0] + float(rng.uniform(0.8, 3.5))
        if n_parked:
            self.features.append("parked cars")

    # ---- cones, barriers, cycles, racks, distractors on the roadside ---------------------------
    def _roadside_points(self, d_fn, n):
        """n random (road, s, d, heading) points along the roads inside the extent."""
        rng, L = self.rng, self.layout
        out = []
        for _ in range(n * 30):
            if len(out) >= n:
                break
            r = L.roads[int(rng.integers(len(L.roads)))]
            side = int(rng.choice([-1, 1]))
            s = float(rng.uniform(r.s_paint0 + 5, r.path.length))
            d = side * d_fn(r, side)
            xy, h = r.frame(s, d)
            if self.inside(xy, 10.0) and np.hypot(*xy) > L.junction_r and self.near_ego(xy, 50.0):
                out.append((r, s, d, side, h))
        return out

    def _roadside_objects(self):
        rng, cfg = self.rng, self.cfg
        dens = self.density
        # A row of barriers on the walkway along a building site (common in nuScenes Singapore).
        if rng.random() < cfg.p_sidewalk_barriers:
            for r, s, d, side, h in self._roadside_points(lambda r, sd: r.half_width(sd) + r.verge + r.walk * 0.5, 1):
                for j in range(int(rng.integers(5, 18))):
                    size = sample_size(rng, "movable_object.barrier")
                    xy, hh = r.frame(s + j * (size[1] + 0.1), d)
                    self.place_static("movable_object.barrier", size, xy, hh + np.pi / 2, None)
                self.features.append("barriers")
        # Loose cones at the kerb (around a stopped van, a manhole, ...).
        for r, s, d, side, h in self._roadside_points(
                lambda r, sd: r.half_width(sd) + (-0.5 if r.park[0 if sd > 0 else 1] > 0 else 0.4),
                int(rng.poisson(1.2 * dens))):
            for j in range(int(rng.integers(2, 6))):
                self._cone(r, s + j * float(rng.uniform(1.2, 3.0)), d)
        # Parked bicycles and scooters on the verge / walkway edge.
        for r, s, d, side, h in self._roadside_points(lambda r, sd: r.half_width(sd) + r.verge * 0.5 + 0.3,
                                                      int(rng.poisson(0.8 * dens))):
            cat = "vehicle.bicycle" if rng.random() < 0.5 else "vehicle.motorcycle"
            for j in range(int(rng.integers(1, 4))):
                size = sample_size(rng, cat)
                xy, hh = r.frame(s + j * (size[1] + 0.35), d)
                self.place_static(cat, size, xy, hh + side * np.pi / 2, ATTR["cycle.without_rider"], pad=0.05)
        # A bicycle rack with bicycles parked in it (the devkit's eval drops bikes inside racks).
        if rng.random() < cfg.p_bicycle_rack:
            for r, s, d, side, h in self._roadside_points(
                    lambda r, sd: r.half_width(sd) + r.verge + r.walk - 1.1, 1):
                nb = int(rng.integers(3, 7))
                bikes = [sample_size(rng, "vehicle.bicycle") for _ in range(nb)]
                pitch = 0.75
                rack_size = (nb * pitch + 0.3, max(b[0] for b in bikes) + 0.2, 1.2)
                xy, hh = r.frame(s, d)
                rack = self.place_static("static_object.bicycle_rack", rack_size, xy, hh, None, priority=4)
                if rack is not None:
                    rack_occ = len(self.occ.polys) - 1
                    u = np.array([np.cos(hh), np.sin(hh)])
                    for j, bs in enumerate(bikes):
                        # Inside the rack box by construction; the rack's own footprint is skipped.
                        bxy = xy + u * ((j - (nb - 1) / 2) * pitch)
                        bsz = (min(bs[0], rack_size[1] - 0.15), bs[1], bs[2])
                        bike = self.place_static("vehicle.bicycle", bsz, bxy, hh + np.pi / 2,
                                                 ATTR["cycle.without_rider"], pad=0.0,
                                                 skip=rack_occ)
                        if bike is not None:
                            self.in_racks.add(id(bike))
                    self.features.append("bicycle rack")
        # Distractors: non-detection categories.
        if rng.random() < cfg.p_distractors:
            for r, s, d, side, h in self._roadside_points(lambda r, sd: r.half_width(sd) - 0.6, 1):
                size = sample_size(rng, "movable_object.debris")
                self.place_static("movable_object.debris", size, r.frame(s, d)[0], float(rng.uniform(0, np.pi)), None)
            for r, s, d, side, h in self._roadside_points(lambda r, sd: r.half_width(sd) + r.verge * 0.5, 1):
                size = sample_size(rng, "animal")
                self.place_static("animal", size, r.frame(s, d)[0], float(rng.uniform(-np.pi, np.pi)), None, 1)

    # ---- every detection class in view (WorldConfig.cover_classes: the val scenes) -------------
    def _ego_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """The ego box centre at the knots that keyframes can fall between (the knots run a second
        past the scene's end; keyframes come every 0.5 s from its start), and those knots' mask."""
        keep = self.times <= self.cfg.duration_s - 0.5
        e_xy, _, e_h = self.ego_track
        centre = e_xy + EGO_REAR_AXLE_TO_CENTER * np.stack([np.cos(e_h), np.sin(e_h)], -1)
        return centre[keep], keep

    def seen_classes(self) -> set[str]:
        """Detection classes of the final actors that come within SEEN_FRACTION of their class's
        evaluation range of the ego's centre at some knot while present (bicycles in racks do
        not count: the devkit's evaluation drops them)."""
        centre, keep = self._ego_centres()
        seen: set[str] = set()
        for a in self.final:
            name = _DETECTION_NAME.get(a.category)
            if name is None or name in seen or id(a) in self.in_racks:
                continue
            near = np.hypot(*(a.pos[keep] - centre).T) < SEEN_FRACTION * EVAL_RANGE_M[name]
            if np.any(a.present[keep] & near):
                seen.add(name)
        return seen

    def _cover_classes(self):
        """Place a parked or standing group of each detection class the scene does not show
        (``seen_classes``) beside the ego's path: a split of one or two scenes then scores every
        class, where the devkit would count an absent class as AP 0 and every error 1. The groups
        draw from a random stream of their own, and one that would touch a moving actor goes
        again (nothing is re-simulated): the scene without them is unchanged, actor for actor,
        trajectory for trajectory and part for part."""
        main_rng, self.rng = self.rng, np.random.default_rng(self.cover_seed)
        first = len(self.actors)
        try:
            for _ in range(6):
                missing = [c for c in DETECTION_CATEGORIES if c not in self.seen_classes()]
                if not missing:
                    break
                for name in missing:
                    for k in range(40):
                        if self._cover_group(name, on_verge=k >= 20):
                            break
                self._drop_blocked(first)
            if len(self.actors) > first:
                self.features.append("every class in view")
        finally:
            self.rng = main_rng

    def _drop_blocked(self, first: int):
        """Remove the actors added from index ``first`` of self.actors on that touch a vehicle's or
        walker's path at some knot (place_static already kept them clear of everything static)."""
        self._walker_tracks()          # the new statics' tracks; the walkers' come out the same
        dyn = self.vehicles + [a for a in self.actors if a.kind == "walker"]
        stat = [a for a in self.actors if a.kind == "static"]
        pairs, _ = self._conflicts(dyn, stat)
        everyone = dyn + stat
        added = {id(a) for a in self.actors[first:]}
        blocked = {id(everyone[k]) for pair in pairs for k in pair
                   if k < len(everyone) and id(everyone[k]) in added}
        self.actors = [a for a in self.actors if id(a) not in blocked]
        self.final = self.vehicles[1:] + self.actors

    def _cover_spot(self, d_fn, reach: float) -> list:
        """[(road, s, d, side, heading)] of one point ``d_fn(road, side)`` across a road from its
        centre line and within ``reach`` of where the ego drives (the simulated track, not the
        planned route: a slow ego covers only part of it), or [] when 60 draws find none."""
        rng, L = self.rng, self.layout
        centre, _ = self._ego_centres()
        for _ in range(60):
            q = centre[int(rng.integers(len(centre)))]
            r = L.roads[int(rng.integers(len(L.roads)))]
            i = int(np.argmin(np.hypot(*(r.path.pts - q).T)))
            s = float(r.path.s[i] + rng.uniform(-reach / 2, reach / 2))
            if not r.s_paint0 + 5.0 < s < r.path.length - 5.0:
                continue
            side = int(rng.choice([-1, 1]))
            d = side * d_fn(r, side)
            xy, h = r.frame(s, d)
            if (self.inside(xy, 10.0) and np.hypot(*xy) > L.junction_r
                    and np.min(np.hypot(*(centre - xy).T)) < reach):
                return [(r, s, d, side, h)]
        return []

    def _cover_group(self, name: str, on_verge: bool = False) -> int:
        """One group of class ``name`` within half its evaluation range of the ego's path: a
        parked vehicle at the kerb (up on the verge where the road has no parking strip, or with
        ``on_verge``: where a long vehicle finds no gap between the parked cars), two or
        three parked cycles on the verge, two to four people standing on the walkway, three to
        five cones at the kerb or a row of four to eight barriers on the walkway. Returns how many
        actors were placed."""
        rng = self.rng
        cat = DETECTION_CATEGORIES[name][0]
        reach = 0.5 * EVAL_RANGE_M[name]
        place = (lambda *a, **k: int(self.place_static(*a, **k) is not None))   # noqa: E731
        park = (lambda r, sd: r.park[0 if sd > 0 else 1])                       # noqa: E731
        placed = 0
        if name in ("car", "truck", "bus", "trailer", "construction_vehicle"):
            size = sample_size(rng, cat)

            def kerb(r, sd):
                if park(r, sd) > 0 and not on_verge:   # against the kerb, as _parked does
                    overhang = max(0.0, size[1] - park(r, sd)) * 0.8
                    return r.half_width(sd) - 0.25 - size[1] / 2 + overhang
                return r.half_width(sd) + size[1] / 2 + 0.3

            for r, s, d, side, h in self._cover_spot(kerb, reach):
                if all(abs(s - c[0]) > 10.0 + size[0] / 2 for c in r.crossings):
                    flip = 0.0 if side == r.sf else np.pi
                    placed += place(cat, size, r.frame(s, d)[0], h + flip, ATTR["vehicle.parked"])
        elif name in ("motorcycle", "bicycle"):
            for r, s, d, side, h in self._cover_spot(
                    lambda r, sd: r.half_width(sd) + r.verge * 0.5 + 0.3, reach):
                for j in range(int(rng.integers(2, 4))):
                    size = sample_size(rng, cat)
                    xy = r.frame(s + j * (size[1] + 0.35), d)[0]
                    placed += place(cat, size, xy, h + side * np.pi / 2,
                                    ATTR["cycle.without_rider"], pad=0.05)
        elif name == "pedestrian":
            def walkway(r, sd):
                return r.half_width(sd) + r.verge + r.walk * float(rng.uniform(0.55, 0.9))

            for r, s, d, side, h in self._cover_spot(walkway, reach):
                facing = h + float(rng.uniform(-np.pi, np.pi))
                for j in range(int(rng.integers(2, 5))):
                    size = sample_size(rng, cat)
                    xy = r.frame(s + j * 0.8, d)[0]
                    placed += place(cat, size, xy, facing + float(rng.normal(0, 0.5)),
                                    ATTR["pedestrian.standing"], pad=0.1)
        elif name == "traffic_cone":
            for r, s, d, side, h in self._cover_spot(
                    lambda r, sd: r.half_width(sd) + (-0.5 if park(r, sd) > 0 else 0.4), reach):
                for j in range(int(rng.integers(3, 6))):
                    size = sample_size(rng, cat)
                    xy = r.frame(s + j * float(rng.uniform(1.2, 3.0)), d)[0]
                    placed += place(cat, size, xy, float(rng.uniform(0, np.pi)), None)
        else:   # barrier
            for r, s, d, side, h in self._cover_spot(
                    lambda r, sd: r.half_width(sd) + r.verge + r.walk * 0.5, reach):
                along = 0.0
                for j in range(int(rng.integers(4, 9))):
                    size = sample_size(rng, cat)
                    xy, hh = r.frame(s + along + size[1] / 2, d)
                    placed += place(cat, size, xy, hh + np.pi / 2, None)
                    along += size[1] + 0.1
        return placed

    # ---- moving traffic --------------------------------------------------------------------------
    def _traffic_spawn(self):
        rng, L = self.rng, self.layout
        groups: dict = {}
        for k, rt in enumerate(L.routes):
            if rt.lanes & self.closed:
                continue
            groups.setdefault(rt.group, []).append(k)
        headway = float(rng.uniform(25.0, 70.0)) / max(self.density, 0.05)
        self.vehicles: list[_Actor] = [self.ego]
        ego_lo = self.ego.s0 - EGO_SIZE[0] / 2 - 8.0
        ego_hi = self.ego.s0 + EGO_SIZE[0] / 2 + 8.0
        for g, members in groups.items():
            w = np.array([{"straight": 0.6, "near_turn": 0.2, "far_turn": 0.2}[L.routes[k].kind] for k in members])
            route_len = L.routes[members[0]].path.length
            limit = L.roads[g[0]].speed_limit
            s = float(rng.uniform(0, headway))
            while s < route_len - 30:
                k = members[int(rng.choice(len(members), p=w / w.sum()))]
                rt = L.routes[k]
                cat = _pick(rng, _MOVING_MIX)
                if cat == "vehicle.bicycle" and not (rt.outer and rt.kind == "straight" and g != self.ego.group):
                    cat = "vehicle.car"   # cyclists ride straight on in kerb lanes, never ahead of the ego
                attr = ATTR["cycle.with_rider"] if cat in ("vehicle.bicycle", "vehicle.motorcycle") else None
                size = sample_size(rng, cat)
                if attr is not None:   # riders make the box taller than a parked cycle's
                    size = (size[0], size[1], float(np.clip(size[2] + 0.3, 1.45, 1.9)))
                path = rt.path
                if cat == "vehicle.bicycle":  # ride near the kerb, to the side of the travel lane
                    lane_w = L.roads[g[0]].lane_w
                    path = path.offset(-L.drive_side * (lane_w / 2 - size[1] / 2 - 0.35))
                    v0 = float(rng.uniform(3.5, 6.5))
                else:
                    v0 = limit * float(rng.uniform(0.8, 1.1)) * (0.85 if size[0] > 8 else 1.0)
                sc = s + size[0] / 2
                same_lane = g == self.ego.group
                if not (same_lane and ego_lo - size[0] / 2 < sc < ego_hi + size[0] / 2):
                    self.vehicles.append(_Actor(cat, size, 3, attr, "idm", path=path, group=g, s0=sc, v0=v0,
                                                stop_s=rt.stop_s, signal=rt.signal))
                s += size[0] + 3.0 + float(rng.exponential(headway))

    def _run_traffic(self):
        veh = self.vehicles
        sig = self.layout.signals
        # Initial speeds no faster than what lets each vehicle stop behind its leader / a red light.
        v_init = np.array([a.v0 for a in veh])
        order = {}
        for i, a in enumerate(veh):
            order.setdefault(a.group, []).append(i)
        for members in order.values():
            members.sort(key=lambda i: -veh[i].s0)
            for prev, i in zip([None] + members[:-1], members):
                if prev is not None:
                    gap = veh[prev].s0 - veh[prev].size[0] / 2 - veh[i].s0 - veh[i].size[0] / 2
                    v_init[i] = min(v_init[i], v_init[prev] + np.sqrt(2 * 1.5 * max(gap - 3.0, 0.0)))
        if sig is not None:
            for i, a in enumerate(veh):
                if a.signal >= 0 and not sig.is_green(a.signal, 0.0):
                    dist = a.stop_s - a.s0 - a.size[0] / 2
                    if dist > 0:
                        v_init[i] = min(v_init[i], np.sqrt(2 * 1.8 * max(dist - 1.0, 0.0)))
        S, V = _simulate_idm(veh, self.times, sig, v_init)
        for i, a in enumerate(veh):
            xy, h = a.path.at(S[:, i])
            a.pos = xy
            a.vel = V[:, i, None] * np.stack([np.cos(h), np.sin(h)], -1)
            a.yaws = h
            a.present = self.inside(xy) & (S[:, i] < a.path.length - 1.0) & (S[:, i] > 1.0) & self._near_many(xy)
            if a.attribute is not None:
                a.attr = np.full(len(self.times), a.attribute, dtype=np.int64)
            else:
                # Stopped only where the speed is exactly 0 (IDM clamps at 0), so "stopped" boxes have
                # exactly zero velocity between such knots.
                a.attr = np.where(V[:, i] > 0.0, ATTR["vehicle.moving"], ATTR["vehicle.stopped"])
        # Ego: its frame origin is the rear axle, EGO_REAR_AXLE_TO_CENTER behind the box centre.
        e = self.ego
        s_rear = S[:, 0] - EGO_REAR_AXLE_TO_CENTER
        xy, h = e.path.at(s_rear)
        self.ego_track = (xy, V[:, 0, None] * np.stack([np.cos(h), np.sin(h)], -1), h)

    # ---- pedestrians -----------------------------------------------------------------------------
    def _walker(self, category, path: Path, s_knots, v_knots, priority=1):
        size = sample_size(self.rng, category)
        a = _Actor(category, size, priority, None, "walker", path=path, s_knots=s_knots)
        a.v_knots = v_knots
        self.actors.append(a)
        return a

    def _pedestrians(self):
        rng, L, cfg = self.rng, self.layout, self.cfg
        t = self.times
        busy = float(rng.uniform(0.4, 2.2)) * self.density
        adult_mix = {"human.pedestrian.adult": 0.92, "human.pedestrian.child": 0.06,
                     "human.pedestrian.police_officer": 0.02}
        for r in L.roads:
            s_start = (r.s_paint0 - 1.0) if r.s_paint0 > 0 else 0.0
            for side in (1, -1):
                base = r.half_width(side) + r.verge
                wk = r.walk
                probe = r.frame(np.arange(s_start, r.path.length, 10.0), side * (base + wk / 2))[0]
                probe_ok = self.inside(probe) & np.array([self.near_ego(q) for q in probe], dtype=bool)
                n = int(rng.poisson(busy * 10.0 * probe_ok.sum() / 100.0))
                for _ in range(n):
                    direction = 1 if rng.random() < 0.5 else -1
                    # Keep to one half of the walkway by direction, so people pass each other.
                    frac = float(rng.uniform(0.2, 0.42)) if direction * side > 0 else float(rng.uniform(0.58, 0.8))
                    p = Path(r.points(s_start, r.path.length, side * (base + frac * wk)))
                    if direction < 0:
                        p = Path(p.pts[::-1])
                    ok = self.inside(p.pts) & (np.min(np.hypot(
                        p.pts[:, None, 0] - self.ego_xy[None, ::8, 0], p.pts[:, None, 1] - self.ego_xy[None, ::8, 1]),
                        axis=1) < self.cfg.actor_radius_m)
                    inside_s = p.s[ok]
                    if len(inside_s) == 0:
                        continue
                    s0 = float(rng.uniform(inside_s.min(), inside_s.max()))
                    v = float(rng.uniform(1.0, 1.6))
                    cat = _pick(rng, adult_mix)
                    if cat == "human.pedestrian.child":
                        v = min(v, 1.2)
                    if rng.random() < 0.2:   # a stop on the way (window shopping, a phone call)
                        t_stop = float(rng.uniform(0, cfg.duration_s))
                        dur = float(rng.uniform(2, 10))
                        walking = (lambda tt, a=t_stop, b=t_stop + dur: (tt < a) | (tt >= b))
                    else:
                        walking = (lambda tt: np.ones(tt.shape, dtype=bool))
                    sk, vk = _smooth_walk(t, walking, v, p.length - 1.0 - s0, True)
                    self._walker(cat, p, np.maximum(s0 + sk, 0.0), vk)
                # Standing groups and the occasional sitting person near building fronts.
                for _ in range(int(rng.poisson(busy * 0.6 * probe_ok.sum() / 10.0))):
                    s = float(rng.uniform(s_start, r.path.length))
                    xy, h = r.frame(s, side * (base + wk * float(rng.uniform(0.55, 0.9))))
                    facing = h + float(rng.uniform(-np.pi, np.pi))
                    for j in range(int(rng.integers(1, 4))):
                        cat = _pick(rng, adult_mix)
                        size = sample_size(rng, cat)
                        q = xy + (j * 0.8) * np.array([np.cos(h), np.sin(h)])
                        self.place_static(cat, size, q, facing + float(rng.normal(0, 0.5)),
                                          ATTR["pedestrian.standing"], 1, pad=0.1)
                if rng.random() < 0.12:
                    s = float(rng.uniform(s_start, r.path.length))
                    xy, h = r.frame(s, side * (base + wk * 0.88))
                    size = sample_size(rng, "human.pedestrian.adult")
                    size = (size[0] + 0.2, size[1], size[2] * 0.7)
                    self.place_static("human.pedestrian.adult", size, xy, h + side * np.pi / 2,
                                      ATTR["pedestrian.sitting_lying_down"], 1, pad=0.1)
        # People crossing at the zebras when their phase is green (or anytime if unsignalised).
        sig = L.signals
        for cw in L.crosswalks:
            r = L.roads[cw.road]
            n = int(rng.poisson(busy * 1.5))
            for _ in range(n):
                direction = 1 if rng.random() < 0.5 else -1
                ds = direction * float(rng.uniform(0.3, cw.width / 2 - 0.4)) * L.drive_side
                d_from = -direction * (r.half_width(-direction) + r.verge + 0.5 * r.walk)
                d_to = direction * (r.half_width(direction) + r.verge + 0.5 * r.walk)
                a_xy = r.frame(cw.s + ds, d_from)[0]
                b_xy = r.frame(cw.s + ds, d_to)[0]
                if not (self.inside(a_xy) and self.inside(b_xy)):
                    continue
                p = Path(a_xy + np.linspace(0, 1.2, 48)[:, None] * (b_xy - a_xy))
                across = float(np.hypot(*(b_xy - a_xy)))
                v = float(rng.uniform(1.0, 1.6))
                t_ready = float(rng.uniform(-12.0, cfg.duration_s))
                if sig is not None and cw.ped_group >= 0:
                    fine = np.arange(t_ready, t_ready + 120.0, 0.1)
                    ok = np.flatnonzero(sig.is_green(cw.ped_group, fine))
                    if len(ok) == 0:
                        continue
                    t_go = fine[ok[0]] + (float(rng.uniform(0.5, 2.5)) if ok[0] > 0 else 0.0)
                else:
                    t_go = t_ready
                sk, vk = _smooth_walk(t, lambda tt, g=t_go: tt >= g, v, across, False)
                self._walker(_pick(rng, adult_mix), p, sk, vk)
        if L.crosswalks:
            self.features.append("peds crossing")

    # ---- trajectories of walkers and static actors -------------------------------------------
    def _walker_tracks(self):
        t = self.times
        for a in self.actors:
            if a.kind == "walker":
                xy, h = a.path.at(a.s_knots)
                a.pos = xy
                a.vel = a.v_knots[:, None] * np.stack([np.cos(h), np.sin(h)], -1)
                a.yaws = h
                a.present = self.inside(xy) & self._near_many(xy)
                # Standing exactly where the speed is 0 (waiting at the kerb, a pause, arrived).
                a.attr = np.where(a.v_knots > 0.0, ATTR["pedestrian.moving"], ATTR["pedestrian.standing"])
            elif a.kind == "static":
                K = len(t)
                a.pos = np.repeat(a.xy[None], K, 0)
                a.vel = np.zeros((K, 2))
                a.yaws = np.full(K, a.yaw)
                a.present = np.ones(K, dtype=bool)
                a.attr = np.full(K, NO_ATTR if a.attribute is None else a.attribute, dtype=np.int64)

    # ---- conflicts ---------------------------------------------------------------------------------
    def _conflicts(self, dyn: list[_Actor], stat: list[_Actor]):
        """Pairs (i, j) of indices into dyn + stat whose footprints overlap at some knot; dyn[0]
        is the ego. Moving boxes are stretched by the distance covered in half a knot interval, so
        being clear at the knots means clear at all times."""
        K = len(self.times)
        nd = len(dyn)
        e_pos = self.ego_track[0] + EGO_REAR_AXLE_TO_CENTER * np.stack(
            [np.cos(self.ego_track[2]), np.sin(self.ego_track[2])], -1)
        pos = np.stack([e_pos] + [a.pos for a in dyn[1:]], 1)                    # (K, nd, 2)
        yaw = np.stack([self.ego_track[2]] + [a.yaws for a in dyn[1:]], 1)
        spd = np.stack([np.hypot(*self.ego_track[1].T)] + [np.hypot(*a.vel.T) for a in dyn[1:]], 1)
        pres = np.stack([np.ones(K, bool)] + [a.present for a in dyn[1:]], 1)
        half = np.array([[d.size[0] / 2, d.size[1] / 2] for d in dyn]) + 0.06
        s_c = np.array([a.xy for a in stat]).reshape(-1, 2)
        s_y = np.array([a.yaw for a in stat])
        s_h = np.array([[a.size[0] / 2, a.size[1] / 2] for a in stat]).reshape(-1, 2) + 0.06
        o_c, o_y, o_h = self.obstacles
        s_c = np.concatenate([s_c, o_c])
        s_y = np.concatenate([s_y, o_y])
        s_h = np.concatenate([s_h, o_h])
        n_sa = len(stat)
        s_r = np.hypot(*s_h.T)
        pairs = set()
        h = np.broadcast_to(half, (K, nd, 2)).copy()
        h[..., 0] += spd * self.dt * 0.5
        r = np.hypot(h[..., 0], h[..., 1])                                        # (K, nd)
        # dynamic-dynamic: all knots and pairs at once, exact test only for near pairs
        iu, ju = np.triu_indices(nd, 1)
        near = pres[:, iu] & pres[:, ju]
        near &= np.hypot(*(pos[:, iu] - pos[:, ju]).transpose(2, 0, 1)) < r[:, iu] + r[:, ju]
        kk, pp = np.nonzero(near)
        if len(kk):
            a_, b_ = iu[pp], ju[pp]
            hit = _obb_overlap(pos[kk, a_], yaw[kk, a_], h[kk, a_], pos[kk, b_], yaw[kk, b_], h[kk, b_])
            pairs.update(zip(a_[hit].tolist(), b_[hit].tolist()))
        # dynamic-static: candidates from each actor's whole-trajectory bounding box first
        big = np.where(pres, r, 0.0).max(0)
        lo = np.where(pres[..., None], pos, np.inf).min(0) - big[:, None]
        hi = np.where(pres[..., None], pos, -np.inf).max(0) + big[:, None]
        ci, cj = np.nonzero((s_c[None, :, 0] + s_r[None] > lo[:, None, 0]) & (s_c[None, :, 0] - s_r[None] < hi[:, None, 0])
                            & (s_c[None, :, 1] + s_r[None] > lo[:, None, 1]) & (s_c[None, :, 1] - s_r[None] < hi[:, None, 1]))
        if len(ci):
            d = np.hypot(pos[:, ci, 0] - s_c[cj, 0], pos[:, ci, 1] - s_c[cj, 1])   # (K, C)
            kk, cc = np.nonzero(pres[:, ci] & (d < r[:, ci] + s_r[cj]))
            if len(kk):
                a_, b_ = ci[cc], cj[cc]
                hit = _obb_overlap(pos[kk, a_], yaw[kk, a_], h[kk, a_], s_c[b_], s_y[b_], s_h[b_])
                pairs.update(zip(a_[hit].tolist(), (b_[hit] + nd).tolist()))
        return pairs, n_sa

    def _resolve(self):
        """Simulate, drop the lower-priority actor of each overlapping pair, re-simulate when a
        vehicle went (its followers had been braking for it). Dropping actors never creates an
        overlap, so the last round may end with a removal and no re-simulation."""
        for it in range(3):
            self._run_traffic()
            self._walker_tracks()
            # Never-present actors are not part of the scene at all.
            self.vehicles = [self.ego] + [a for a in self.vehicles[1:] if a.present.any()]
            self.actors = [a for a in self.actors if a.kind == "static" or a.present.any()]
            dyn = self.vehicles + [a for a in self.actors if a.kind == "walker"]
            stat = [a for a in self.actors if a.kind == "static"]
            pairs, _ = self._conflicts(dyn, stat)
            everyone = dyn + stat
            prio = [a.priority for a in everyone]
            dead = set()
            for i, j in sorted(pairs):
                if i in dead or j in dead:
                    continue
                if j >= len(everyone):    # a building / pole / trunk: the actor goes (never the ego)
                    if i != 0:
                        dead.add(i)
                    continue
                dead.add(i if (prio[i], -i) < (prio[j], -j) else j)
            dead_ids = {id(everyone[i]) for i in dead}
            veh_dead = any(id(a) in dead_ids for a in self.vehicles)
            self.vehicles = [a for a in self.vehicles if id(a) not in dead_ids]
            self.actors = [a for a in self.actors if id(a) not in dead_ids]
            if not veh_dead:
                break
        self.final = self.vehicles[1:] + self.actors

    # ---- finish ----------------------------------------------------------------------------------
    def _finish(self, static) -> Scenario:
        cfg, rng = self.cfg, self.rng
        res = cfg.ground_resolution_m
        xmin, ymin, xmax, ymax = self.extent
        origin = np.array([cfg.map_origin_margin_m, cfg.map_origin_margin_m])
        offset = origin - np.array([xmin, ymin])
        W = int(round((xmax - xmin) / res))
        H = int(round((ymax - ymin) / res))
        ids = paint_ground(self.layout, float(origin[0]), float(origin[1]), (H, W), res, offset)
        ground = GroundMap(ids, float(origin[0]), float(origin[1]), res)
        A = len(self.final)
        K = len(self.times)
        pos = np.zeros((A, K, 2))
        vel = np.zeros((A, K, 2))
        yaw = np.zeros((A, K))
        present = np.zeros((A, K), dtype=bool)
        attr = np.full((A, K), NO_ATTR, dtype=np.int64)
        infos = []
        p_actor, p_off, p_size, p_mat, p_col = [], [], [], [], []
        for i, a in enumerate(self.final):
            pos[i] = a.pos + offset
            vel[i] = a.vel
            yaw[i] = np.unwrap(a.yaws)
            present[i] = a.present
            attr[i] = a.attr
            infos.append(ActorInfo(i, a.category, tuple(float(x) for x in a.size)))
            attr_name = None if a.attribute is None or a.attribute < 0 else ATTRIBUTES[a.attribute]
            off, sz, mat, col = build_parts(rng, a.category, a.size, attr_name)
            p_actor.append(np.full(len(off), i, dtype=np.int64))
            p_off.append(off)
            p_size.append(sz)
            p_mat.append(mat)
            p_col.append(col)
        cat = (lambda xs, shape, dt: np.concatenate(xs) if xs else np.zeros(shape, dtype=dt))
        actor_parts = (cat(p_actor, (0,), np.int64), cat(p_off, (0, 3), np.float64),
                       cat(p_size, (0, 3), np.float64), cat(p_mat, (0,), np.int64),
                       cat(p_col, (0, 3), np.uint8))
        st_c, st_s, st_y, st_m, st_col = self.static_arrays
        st_c = st_c.copy()
        st_c[:, :2] += offset
        static_parts = Parts(st_c, st_s, st_y, np.zeros_like(st_c), st_m, st_col,
                             np.full(len(st_c), -1, dtype=np.int64))
        e_xy, e_v, e_h = self.ego_track
        ego = (e_xy + offset, e_v, np.unwrap(e_h))
        counts: dict = {}
        for a in self.final:
            counts[a.category] = counts.get(a.category, 0) + 1
        # Attribute per knot interval: "stopped"/"standing" only where both knots are at rest
        # (velocity exactly 0 in between), otherwise the moving variant.
        moving = np.isin(attr, [ATTR["vehicle.moving"], ATTR["pedestrian.moving"]])
        attr = np.where(moving[:, 1:] & ~moving[:, :-1], attr[:, 1:], attr[:, :-1])
        desc = ", ".join([self.layout.description] + self.features)
        return Scenario(infos, ground, self.location, desc, self.layout.kind, cfg.duration_s, self.dt,
                        ego, (pos, vel, yaw, present, attr), static_parts, actor_parts)
