"""Road layouts of the synthetic world: roads, lane routes, signals, the ground raster, static structures.

Everything here is built in a *local* frame (metres, the layout around the origin); ``world.py``
shifts the finished world to positive global coordinates. A road is a centreline sampled every
0.5 m with exact headings; its cross-section, measured by the lateral offset d (positive to the left
of increasing s), is: travel lanes | optional parking strip | kerb | verge (grass or paving) |
walkway. A lane route is a :class:`Path` a vehicle follows, possibly through a junction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from shapely.geometry import Polygon
from shapely.ops import unary_union
from shapely.strtree import STRtree

from .geometry import MATERIAL

STEP = 0.5          # centreline sample spacing, m
_SHIFT = 3          # cv2 fixed-point bits: sub-cell accuracy for thin lane paint


def _rot(h):
    return np.stack([np.cos(h), np.sin(h)], axis=-1)


def _left(h):
    return np.stack([-np.sin(h), np.cos(h)], axis=-1)


class Path:
    """A polyline with arc length and unwrapped heading; vectorized lookup by arc length.

    pts (N, 2) m, s (N,) m from the start, heading (N,) rad (unwrapped).
    """

    def __init__(self, pts: np.ndarray, heading: np.ndarray | None = None):
        pts = np.asarray(pts, dtype=np.float64)
        keep = np.concatenate([[True], np.hypot(*np.diff(pts, axis=0).T) > 1e-6])
        pts = pts[keep]
        if heading is None:
            # Central differences: a smooth heading for resampled/concatenated polylines.
            g = np.gradient(pts, axis=0)
            heading = np.arctan2(g[:, 1], g[:, 0])
        else:
            heading = np.asarray(heading, dtype=np.float64)[keep]
        self.pts = pts
        self.heading = np.unwrap(heading)
        self.s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
        self.length = float(self.s[-1])

    def at(self, s):
        """(..., 2) position and (...) heading at arc length s (clamped to the ends)."""
        s = np.asarray(s, dtype=np.float64)
        x = np.interp(s, self.s, self.pts[:, 0])
        y = np.interp(s, self.s, self.pts[:, 1])
        return np.stack([x, y], axis=-1), np.interp(s, self.s, self.heading)

    def project(self, xy) -> float:
        """Arc length of the vertex nearest to the point xy (2,)."""
        return float(self.s[np.argmin(np.hypot(*(self.pts - np.asarray(xy)).T))])

    def offset(self, d: float) -> "Path":
        """The parallel path d metres to the left."""
        return Path(self.pts + d * _left(self.heading), self.heading)


def _polyline(start, heading, pieces, step=STEP):
    """Centreline from pieces [(length m, curvature 1/m)]: points (N, 2) and exact headings (N,)."""
    bounds = np.concatenate([[0.0], np.cumsum([p[0] for p in pieces])])
    kappa = np.array([p[1] for p in pieces], dtype=np.float64)
    n = int(np.ceil(bounds[-1] / step)) + 1
    s = np.linspace(0.0, bounds[-1], n)
    hb = heading + np.concatenate([[0.0], np.cumsum(kappa * np.diff(bounds))])
    idx = np.clip(np.searchsorted(bounds, s, side="right") - 1, 0, len(pieces) - 1)
    h = hb[idx] + kappa[idx] * (s - bounds[idx])
    # Chord of each step along the mid heading: exact direction for arcs, length error ~k^2 ds^3.
    hm = 0.5 * (h[1:] + h[:-1])
    ds = np.diff(s)
    xy = np.zeros((n, 2))
    xy[1:] = np.cumsum(ds[:, None] * _rot(hm), axis=0)
    return np.asarray(start, dtype=np.float64) + xy, h


@dataclass
class Road:
    """One road (or one junction arm, s = 0 at the junction centre, pointing outwards).

    Forward lanes (travelling towards increasing s) lie on side sf = -drive_side (right for
    right-hand traffic), backward lanes on the other side. Widths in metres; ``park`` and the
    half widths are indexed [left (d > 0), right (d < 0)].
    """

    path: Path
    n_fwd: int
    n_bwd: int
    lane_w: float
    park: tuple[float, float]
    verge: float
    walk: float
    verge_grass: tuple[bool, bool]
    drive_side: int
    speed_limit: float
    s_paint0: float = 0.0        # lane paint starts here (after a junction's crosswalk)
    crossings: list = field(default_factory=list)   # [(s_centre, width)] zebra crossings

    @property
    def sf(self) -> int:
        return -self.drive_side

    def lanes_on(self, side: int) -> int:
        """Number of travel lanes on side +1 (left) / -1 (right)."""
        return self.n_fwd if side == self.sf else self.n_bwd

    def half_width(self, side: int) -> float:
        return self.lanes_on(side) * self.lane_w + self.park[0 if side > 0 else 1]

    def lane_d(self, forward: bool, i: int) -> float:
        """Lateral offset of lane i (0 = next to the centre line) of the given direction."""
        side = self.sf if forward else -self.sf
        return side * (i + 0.5) * self.lane_w

    def park_d(self, side: int) -> float:
        return side * (self.lanes_on(side) * self.lane_w + self.park[0 if side > 0 else 1] / 2)

    def points(self, s0: float, s1: float, d: float) -> np.ndarray:
        """Offset polyline between arc lengths s0 < s1 (includes both ends), (N, 2)."""
        p = self.path
        inner = (p.s > s0) & (p.s < s1)
        s = np.concatenate([[s0], p.s[inner], [s1]])
        xy, h = p.at(s)
        return xy + d * _left(h)

    def band(self, s0: float, s1: float, d0: float, d1: float) -> np.ndarray:
        """Closed polygon (N, 2) of the strip s in [s0, s1], d in [d0, d1]."""
        a = self.points(s0, s1, d0)
        b = self.points(s0, s1, d1)
        return np.concatenate([a, b[::-1]])

    def frame(self, s, d):
        """Global (local-frame) position (..., 2) and heading of the point (s, d)."""
        xy, h = self.path.at(s)
        return xy + np.asarray(d)[..., None] * _left(h), h


@dataclass
class Route:
    """A lane-level path a vehicle can follow, with its (at most one) signal-controlled stop."""

    path: Path
    group: tuple              # vehicles with the same group share the first lane (car-following)
    lanes: frozenset          # lane keys (road index, forward?, lane index) it uses
    stop_s: float = np.inf    # arc length of the stop line on this route (vehicle front stops here)
    signal: int = -1          # signal group controlling the stop, -1 none
    kind: str = "straight"    # straight / near_turn / far_turn
    outer: bool = False       # starts in the kerb-side lane (cyclists ride there)


@dataclass
class Signals:
    """Fixed-time two-phase signal: group 0 green, all-red, group 1 green, all-red, repeat."""

    green: tuple[float, float]
    all_red: float
    offset: float

    @property
    def cycle(self) -> float:
        return self.green[0] + self.green[1] + 2 * self.all_red

    def is_green(self, group: int, t):
        tm = np.mod(np.asarray(t, dtype=np.float64) - self.offset, self.cycle)
        if group == 0:
            return tm < self.green[0]
        a = self.green[0] + self.all_red
        return (tm >= a) & (tm < a + self.green[1])


@dataclass
class Crosswalk:
    """A zebra crossing: walking path across the road and the signal group that lets people cross
    (-1: unsignalised)."""

    road: int
    s: float
    width: float
    ped_group: int


@dataclass
class Layout:
    kind: str
    drive_side: int
    roads: list[Road]
    routes: list[Route]
    signals: Signals | None
    crosswalks: list[Crosswalk]
    fillets: list[np.ndarray]          # extra road-surface polygons at junction corners
    junction_r: float = 0.0            # radius around the origin kept free of parking/buildings
    description: str = ""

    def road_polygons(self, s_pad: float = 0.0):
        """Shapely polygons: carriageways (road surface) and full corridors (up to the walkway's back)."""
        carriage, corridor = [], []
        for r in self.roads:
            L = r.path.length
            carriage.append(Polygon(r.band(0.0, L, -r.half_width(-1), r.half_width(+1))))
            corridor.append(Polygon(r.band(0.0, L, -(r.half_width(-1) + r.verge + r.walk) - s_pad,
                                           r.half_width(+1) + r.verge + r.walk + s_pad)))
        for f in self.fillets:
            carriage.append(Polygon(f))
        return unary_union(carriage).buffer(0), unary_union(corridor).buffer(0)


# ------------------------------------------------------------------------------------------------
# Layout generation
# ------------------------------------------------------------------------------------------------
def _cross_section(rng):
    n = int(rng.choice([2, 3, 4], p=[0.5, 0.2, 0.3]))
    n_a = n // 2 + (n % 2) * int(rng.integers(0, 2))
    return dict(n_a=n_a, n_b=n - n_a, lane_w=float(rng.uniform(3.0, 3.6)),
                park=tuple(float(rng.uniform(2.2, 2.5)) if rng.random() < 0.55 else 0.0 for _ in range(2)),
                verge=float(rng.uniform(1.0, 3.0)), walk=float(rng.uniform(1.8, 4.0)),
                verge_grass=tuple(bool(rng.random() < 0.6) for _ in range(2)),
                speed_limit=float(rng.uniform(11.0, 15.0) if n >= 3 else rng.uniform(8.5, 13.5)))


def _lane_routes(roads, ri, stop=None, signal=-1):
    """Routes along one road in both directions (no junction): one per lane."""
    r = roads[ri]
    out = []
    for forward, n in ((True, r.n_fwd), (False, r.n_bwd)):
        for i in range(n):
            p = r.path.offset(r.lane_d(forward, i))
            if not forward:
                p = Path(p.pts[::-1], p.heading[::-1] + np.pi)
            stop_s = np.inf
            if stop is not None:
                # Stop line in the lane's own arc length (lanes on a curve are longer or shorter).
                s_road = stop[0] - stop[1] if forward else stop[0] + stop[1]
                stop_s = p.project(r.frame(s_road, r.lane_d(forward, i))[0])
            out.append(Route(p, (ri, forward, i), frozenset({(ri, forward, i)}), stop_s, signal,
                             "straight", outer=(i == n - 1)))
    return out


def _fillet_connector(P, h1, Q, h2, step=STEP):
    """Points from P (heading h1) to Q (heading h2): straight, circular arc tangent to both lane
    lines, straight. For h1 == h2, a straight segment."""
    d = np.angle(np.exp(1j * (h2 - h1)))
    u1, u2 = _rot(h1), _rot(h2)
    if abs(d) < 1e-6:
        n = max(2, int(np.ceil(np.hypot(*(Q - P)) / step)) + 1)
        return P + np.linspace(0, 1, n)[:, None] * (Q - P)
    # Intersection X of the two lane lines: P + a u1 = Q - b u2.
    A = np.array([u1, u2]).T
    a, b = np.linalg.solve(A, Q - P)
    X = P + a * u1
    r = min(a, b)
    T1, T2 = X - r * u1, X + r * u2
    side = np.sign(d)
    C = T1 + side * r * _left(h1)
    phi0 = h1 - side * np.pi / 2
    n_arc = max(4, int(np.ceil(abs(d) * r / step)))
    phi = phi0 + np.linspace(0, d, n_arc)
    arc = C + r * _rot(phi)
    seg1 = P + np.linspace(0, 1, max(2, int(np.ceil((a - r) / step)) + 1))[:, None] * (T1 - P)
    seg2 = T2 + np.linspace(0, 1, max(2, int(np.ceil((b - r) / step)) + 1))[:, None] * (Q - T2)
    return np.concatenate([seg1, arc, seg2])


def build_layout(rng: np.random.Generator, kind: str, drive_side: int, arm_length: float,
                 p_midblock: float) -> tuple[Layout, dict]:
    """Roads, routes, signals and crosswalks of one layout, in the local frame.

    Returns the layout and ``ego``: hints for placing the ego (its candidate routes and where its
    start lies on them: ``(route index, s_start)`` options).
    """
    theta = float(rng.uniform(0, 2 * np.pi))
    roads: list[Road] = []
    routes: list[Route] = []
    crosswalks: list[Crosswalk] = []
    fillets: list[np.ndarray] = []
    signals = None
    ego_opts: list[tuple[int, float]] = []
    lead_in = 130.0  # ego starts this far from a road's start: the ground margin must exist behind it
    if kind in ("straight", "curved"):
        cs = _cross_section(rng)
        if kind == "straight":
            pieces = [(arm_length * 2, 0.0)]
            desc = "straight road"
        else:
            radius = float(rng.uniform(40.0, 150.0))
            angle = float(rng.uniform(np.radians(30), np.radians(90)))
            pieces = [(lead_in + float(rng.uniform(15, 80)), 0.0),
                      (radius * angle, float(rng.choice([-1, 1])) / radius), (arm_length * 2, 0.0)]
            desc = f"curved road, radius {radius:.0f} m"
        pts, h = _polyline((0.0, 0.0), theta, pieces)
        road = Road(Path(pts, h), cs["n_a"], cs["n_b"], cs["lane_w"], cs["park"], cs["verge"], cs["walk"],
                    cs["verge_grass"], drive_side, cs["speed_limit"])
        roads.append(road)
        stop = None
        if rng.random() < p_midblock:
            s_c = lead_in + float(rng.uniform(25, 110))
            width = float(rng.uniform(3.0, 4.5))
            road.crossings.append((s_c, width))
            crosswalks.append(Crosswalk(0, s_c, width, 1))
            stop = (s_c, width / 2 + 1.5)
            desc += ", signalised ped crossing"
            signals = Signals((float(rng.uniform(15, 30)), float(rng.uniform(10, 20))), 2.0,
                              float(rng.uniform(0, 60)))
        routes = _lane_routes(roads, 0, stop, 0 if stop else -1)
        for k, rt in enumerate(routes):
            if rt.group[1]:  # ego drives forward (the layout is randomly rotated anyway)
                ego_opts.append((k, lead_in))
        return Layout(kind, drive_side, roads, routes, signals, crosswalks, fillets, 0.0, desc), ego_opts

    # Junctions: arms k = 0..3 at headings theta + k pi/2 from the origin; a T-junction lacks arm 3.
    arms = [0, 1, 2, 3] if kind == "intersection" else [0, 1, 2]
    cs_ew, cs_ns = _cross_section(rng), _cross_section(rng)
    for k in arms:
        cs = cs_ew if k % 2 == 0 else cs_ns
        # Arms 0/1 carry the road's "a" direction outwards; 2/3 its "b" direction. Parking and grass
        # mirror so that one through road has consistent sides.
        n_out, n_in = (cs["n_a"], cs["n_b"]) if k < 2 else (cs["n_b"], cs["n_a"])
        park = cs["park"] if k < 2 else cs["park"][::-1]
        grass = cs["verge_grass"] if k < 2 else cs["verge_grass"][::-1]
        pts, h = _polyline((0.0, 0.0), theta + k * np.pi / 2, [(arm_length, 0.0)])
        roads.append(Road(Path(pts, h), n_out, n_in, cs["lane_w"], park, cs["verge"], cs["walk"], grass,
                          drive_side, cs["speed_limit"]))
    ri_of = {k: i for i, k in enumerate(arms)}

    def facing(j, k):
        """Half width of arm j on its side facing arm k's direction."""
        rj = roads[ri_of[j]]
        side = 1 if np.dot(_left(theta + j * np.pi / 2), _rot(theta + k * np.pi / 2)) > 0 else -1
        return rj.half_width(side)

    box = {}
    for k in arms:
        perp = [j for j in arms if (j - k) % 2 == 1]
        box[k] = max(facing(j, k) for j in perp)
    cw = float(rng.uniform(3.0, 4.5))
    setback = {k: box[k] + 0.5 + cw + 1.0 for k in arms}   # stop line (vehicle fronts stop here)
    for k in arms:
        r = roads[ri_of[k]]
        r.s_paint0 = setback[k]
        r.crossings.append((box[k] + 0.5 + cw / 2, cw))
        crosswalks.append(Crosswalk(ri_of[k], box[k] + 0.5 + cw / 2, cw, 1 - (k % 2)))
    # Corner fillets between adjacent arms, radius equal to the stop setback so that the kerb-side
    # turning path is concentric with the kerb.
    for k in arms:
        k2 = (k + 1) % 4
        if k2 not in arms:
            continue
        u, v = _rot(theta + k * np.pi / 2), _rot(theta + k2 * np.pi / 2)
        K = facing(k2, k) * u + facing(k, k2) * v
        rf = min(setback[k] - box[k], setback[k2] - box[k2])
        C = K + rf * (u + v)
        phi = np.linspace(0, np.pi / 2, 12)
        arc = C - rf * (np.cos(phi)[:, None] * v + np.sin(phi)[:, None] * u)
        fillets.append(np.concatenate([K[None], arc]))
    # Routes: incoming lane -> connector -> outgoing lane.
    for k in arms:
        rk = roads[ri_of[k]]
        h_in = theta + k * np.pi / 2 + np.pi
        for i in range(rk.n_bwd):
            d_in = rk.lane_d(False, i)
            inc = rk.points(setback[k], rk.path.length, d_in)[::-1]
            options = []
            for m in arms:
                if m == k:
                    continue
                rm = roads[ri_of[m]]
                turn = (m - k) % 4  # 2: straight; 1 or 3: a turn
                h_out = theta + m * np.pi / 2
                if turn == 2:
                    j, kind_r = i, "straight"
                    if j >= rm.n_fwd:
                        continue
                else:
                    left_turn = np.sin(h_out - h_in) > 0
                    near = left_turn == (drive_side < 0)
                    if near and i == rk.n_bwd - 1:
                        j, kind_r = rm.n_fwd - 1, "near_turn"
                    elif not near and i == 0:
                        j, kind_r = 0, "far_turn"
                    else:
                        continue
                out = rm.points(setback[m], rm.path.length, rm.lane_d(True, j))
                con = _fillet_connector(inc[-1], h_in, out[0], h_out)
                path = Path(np.concatenate([inc, con[1:-1], out]))
                stop_s = float(rk.path.length - setback[k])
                options.append(Route(path, (ri_of[k], False, i),
                                     frozenset({(ri_of[k], False, i), (ri_of[m], True, j)}),
                                     stop_s, k % 2, kind_r, outer=(i == rk.n_bwd - 1)))
            for o in options:
                routes.append(o)
                ego_opts.append((len(routes) - 1, o.stop_s))
    signals = Signals((float(rng.uniform(15, 30)), float(rng.uniform(15, 30))), 3.0, 0.0)
    desc = "4-way intersection" if kind == "intersection" else "T-junction"
    jr = max(setback.values()) + 8.0
    return Layout(kind, drive_side, roads, routes, signals, crosswalks, fillets, jr, desc), ego_opts


# ------------------------------------------------------------------------------------------------
# Ground raster
# ------------------------------------------------------------------------------------------------
def paint_ground(layout: Layout, x0: float, y0: float, shape: tuple[int, int], res: float,
                 offset: np.ndarray) -> np.ndarray:
    """(H, W) uint8 material ids of the ground; local layout coordinates + offset = global.
    Row r covers global y in [y0 + r res, y0 + (r+1) res) (GroundMap convention)."""
    ids = np.full(shape, MATERIAL["grass"], dtype=np.uint8)
    scale = float(1 << _SHIFT)

    def px(poly):
        q = (np.asarray(poly) + offset - (x0, y0)) / res - 0.5
        return np.round(q * scale).astype(np.int32)

    def fill(polys, material):
        # One call per polygon: cv2 fills a list of polygons with the even-odd rule, which would
        # punch holes where arms overlap at a junction.
        for p in polys:
            cv2.fillPoly(ids, [px(p)], int(MATERIAL[material]), lineType=cv2.LINE_8, shift=_SHIFT)

    walk, verge_g, verge_p, kerb, road, paint = [], [], [], [], [], []
    for r in layout.roads:
        L = r.path.length
        for si, side in enumerate((1, -1)):
            hw = r.half_width(side)
            walk.append(r.band(0, L, side * (hw + r.verge), side * (hw + r.verge + r.walk)))
            (verge_g if r.verge_grass[si] else verge_p).append(r.band(0, L, side * hw, side * (hw + r.verge)))
            kerb.append(r.band(0, L, side * hw, side * (hw + 0.3)))
        road.append(r.band(0, L, -r.half_width(-1), r.half_width(1)))
        paint.extend(_markings(r))
    fill(walk, "sidewalk")
    fill(verge_g, "grass")
    fill(verge_p + kerb, "sidewalk")
    fill(road + list(layout.fillets), "road")
    fill(paint, "lane_marking")
    return ids


def _dashes(r: Road, s0, s1, d, width, dash, gap):
    starts = np.arange(s0, s1 - dash, dash + gap)
    if len(starts) == 0:
        return []
    a, ha = r.frame(starts, np.full(len(starts), d))
    b, hb = r.frame(starts + dash, np.full(len(starts), d))
    na, nb = _left(ha) * width / 2, _left(hb) * width / 2
    quads = np.stack([a - na, b - nb, b + nb, a + na], axis=1)
    return list(quads)


def _markings(r: Road) -> list[np.ndarray]:
    """Lane paint polygons: centre line, lane lines (dashed), edge lines (solid), zebras, stop lines."""
    L = r.path.length
    s0 = r.s_paint0
    out = []
    w = 0.15
    multi = max(r.n_fwd, r.n_bwd) >= 2
    if r.n_fwd and r.n_bwd:
        if multi:  # double solid between opposing multi-lane flows
            out.append(r.band(s0, L, -0.18, -0.06))
            out.append(r.band(s0, L, 0.06, 0.18))
        else:
            out.extend(_dashes(r, s0, L, 0.0, w, 3.0, 6.0))
    for side in (1, -1):
        n = r.lanes_on(side)
        for k in range(1, n):
            out.extend(_dashes(r, s0, L, side * k * r.lane_w, w, 3.0, 6.0))
        edge = n * r.lane_w if r.park[0 if side > 0 else 1] > 0 else n * r.lane_w - 0.35
        out.append(r.band(s0, L, side * (edge - w / 2), side * (edge + w / 2)))
    for s_c, cw in r.crossings:
        hwl, hwr = r.half_width(1), r.half_width(-1)
        ds = np.arange(-hwr + 0.3, hwl - 0.6, 1.0)
        for d in ds:
            out.append(r.band(s_c - cw / 2, s_c + cw / 2, d, d + 0.5))
        # Stop lines across the lanes that approach the crossing.
        if r.s_paint0 > 0:    # junction arm: only the incoming (backward) lanes, just outside the zebra
            sb = -r.sf
            d_in = sb * r.n_bwd * r.lane_w
            out.append(r.band(s_c + cw / 2 + 0.6, s_c + cw / 2 + 1.0, min(0, d_in), max(0, d_in)))
        else:
            d_f = r.sf * r.n_fwd * r.lane_w
            out.append(r.band(s_c - cw / 2 - 1.4, s_c - cw / 2 - 1.0, min(0, d_f), max(0, d_f)))
            d_b = -r.sf * r.n_bwd * r.lane_w
            out.append(r.band(s_c + cw / 2 + 1.0, s_c + cw / 2 + 1.4, min(0, d_b), max(0, d_b)))
    return out


# ------------------------------------------------------------------------------------------------
# Static structures
# ------------------------------------------------------------------------------------------------
BUILDING_COLORS = np.array([(170, 165, 155), (200, 190, 170), (225, 222, 215), (150, 85, 70),
                            (120, 130, 140), (185, 160, 130), (95, 110, 130), (210, 200, 185)],
                           dtype=np.uint8)


@dataclass
class StaticWorld:
    """Static parts (local frame) and the ground-level obstacle footprints they make.

    boxes: list of (cx, cy, cz, l, w, h, yaw, material id, (r, g, b)); obstacles: indices of the
    boxes that stand on the ground and block actors (buildings, walls, poles, trunks).
    """

    boxes: list = field(default_factory=list)
    obstacle: list = field(default_factory=list)

    def add(self, cx, cy, z0, l, w, h, yaw, material, color, obstacle):
        self.boxes.append((float(cx), float(cy), float(z0 + h / 2), float(l), float(w), float(h),
                           float(yaw), MATERIAL[material], tuple(int(c) for c in color)))
        self.obstacle.append(bool(obstacle))

    def arrays(self):
        b = self.boxes
        center = np.array([x[0:3] for x in b], dtype=np.float64).reshape(-1, 3)
        size = np.array([x[3:6] for x in b], dtype=np.float64).reshape(-1, 3)
        yaw = np.array([x[6] for x in b], dtype=np.float64)
        mat = np.array([x[7] for x in b], dtype=np.int64)
        col = np.array([x[8] for x in b], dtype=np.uint8).reshape(-1, 3)
        return center, size, yaw, mat, col, np.array(self.obstacle, dtype=bool)


def box_polygon(cx, cy, l, w, yaw) -> Polygon:
    c, s = np.cos(yaw), np.sin(yaw)
    dx = np.array([1, -1, -1, 1]) * l / 2
    dy = np.array([1, 1, -1, -1]) * w / 2
    return Polygon(np.stack([cx + c * dx - s * dy, cy + s * dx + c * dy], axis=1))


def build_static(layout: Layout, rng: np.random.Generator, extent, carriage, corridor,
                 ego_xy: np.ndarray | None = None, radius: float = 1e9) -> tuple[StaticWorld, list[Polygon]]:
    """Buildings, walls, street lights, sign poles and trees along every road inside ``extent``
    (xmin, ymin, xmax, ymax, local frame); street furniture only within ``radius`` of the ego path
    points ``ego_xy`` (M, 2), buildings within 1.5 x radius (they are seen from further away).
    Returns the static world and building/wall footprints."""
    xmin, ymin, xmax, ymax = extent
    sw = StaticWorld()
    placed: list[Polygon] = []      # footprints of placed buildings and walls
    public = corridor.buffer(0.3)   # buildings keep off roads and walkways

    def inside(x, y, m=0.0, reach=1.0):
        if ego_xy is not None and np.min(np.hypot(ego_xy[:, 0] - x, ego_xy[:, 1] - y)) > radius * reach:
            return False
        return xmin + m < x < xmax - m and ymin + m < y < ymax - m

    def free(poly):
        if poly.intersects(public):
            return False
        return not any(poly.intersects(p) for p in placed)

    for r in layout.roads:
        L = r.path.length
        for side in (1, -1):
            line = r.half_width(side) + r.verge + r.walk
            s = float(rng.uniform(0, 10))
            prev_end = None
            while s < L:
                length = float(rng.uniform(8, 35))
                gap = float(rng.choice([rng.uniform(1, 4), rng.uniform(4, 12), rng.uniform(15, 30)],
                                       p=[0.5, 0.35, 0.15]))
                setback = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.5, 8.0))
                depth = float(rng.uniform(8, 25))
                height = float(np.clip(rng.lognormal(np.log(10.0), 0.6), 3.5, 60.0))
                s_mid = s + length / 2
                (p, h) = r.frame(s_mid, side * (line + setback + depth / 2 + 0.4))
                ok = inside(p[0], p[1], 5.0, 1.5) and s_mid + length / 2 < L
                if ok:
                    poly = box_polygon(p[0], p[1], length, depth, h)
                    if free(poly):
                        placed.append(poly)
                        col = BUILDING_COLORS[rng.integers(len(BUILDING_COLORS))]
                        sw.add(p[0], p[1], 0.0, length, depth, height, h, "building", col, True)
                        # Walls or fences close some gaps between buildings along the property line.
                        if prev_end is not None and 3.0 < s - prev_end < 25.0 and rng.random() < 0.45:
                            wl = s - prev_end - 0.6
                            (q, hq) = r.frame(prev_end + 0.3 + wl / 2, side * (line + 0.6))
                            wpoly = box_polygon(q[0], q[1], wl, 0.25, hq)
                            if free(wpoly):
                                placed.append(wpoly)
                                fence = rng.random() < 0.4
                                sw.add(q[0], q[1], 0.0, wl, 0.08 if fence else 0.25,
                                       float(rng.uniform(1.2, 2.4)), hq, "pole" if fence else "building",
                                       (90, 95, 90) if fence else (185, 180, 170), True)
                        prev_end = s + length
                s += length + gap
    # Street furniture: keep off the carriageway, the crosswalks and the buildings.
    tree_pts = []
    bld_tree = STRtree(placed) if placed else None

    def furniture_ok(x, y, rad):
        from shapely.geometry import Point
        pt = Point(x, y).buffer(rad, 4)
        if not inside(x, y, 1.0) or pt.intersects(carriage):
            return False
        if bld_tree is not None and len(bld_tree.query(pt, predicate="intersects")):
            return False
        if np.hypot(x, y) < layout.junction_r * 0.6:
            return False
        return True

    for ri, r in enumerate(layout.roads):
        L = r.path.length
        cross = [c[0] for c in r.crossings]
        for si, side in enumerate((1, -1)):
            hw = r.half_width(side)
            # Street lights with an arm over the road.
            s = float(rng.uniform(5, 30))
            spacing = float(rng.uniform(25, 40))
            while s < L:
                (p, h) = r.frame(s, side * (hw + 0.45))
                if furniture_ok(p[0], p[1], 0.15) and all(abs(s - c) > 6 for c in cross):
                    ph = float(rng.uniform(7.0, 9.5))
                    sw.add(p[0], p[1], 0.0, 0.22, 0.22, ph, h, "pole", (115, 115, 118), True)
                    arm = 1.8
                    q = p - side * _left(h) * (arm / 2)
                    sw.add(q[0], q[1], ph - 0.25, 0.18, arm, 0.15, h, "pole", (115, 115, 118), False)
                s += spacing
            # Trees on grass verges: trunk + crown kept within the verge + walkway (no overhang
            # into the lane, where buses and trucks drive).
            if r.verge_grass[si]:
                s = float(rng.uniform(3, 15))
                while s < L:
                    (p, h) = r.frame(s, side * (hw + r.verge / 2))
                    if furniture_ok(p[0], p[1], 0.4) and all(abs(s - c) > 5 for c in cross):
                        th = float(rng.uniform(2.8, 4.0))
                        crown_w = float(min(rng.uniform(2.5, 5.0), r.verge + 0.6 + r.walk))
                        crown_h = float(rng.uniform(2.5, 5.5))
                        cq = p + side * _left(h) * max(0.0, crown_w / 2 - r.verge / 2 - 0.3)
                        sw.add(p[0], p[1], 0.0, 0.35, 0.35, th, h, "vegetation", (85, 60, 40), True)
                        sw.add(cq[0], cq[1], th - 0.3, crown_w * float(rng.uniform(0.8, 1.2)), crown_w,
                               crown_h, h, "vegetation",
                               np.clip(np.array((50, 100, 45)) + rng.integers(-15, 16, 3), 0, 255), False)
                        tree_pts.append(p)
                    s += float(rng.uniform(10, 25))
            # A few sign poles facing the traffic.
            for _ in range(int(rng.poisson(L / 120.0))):
                s = float(rng.uniform(0, L))
                (p, h) = r.frame(s, side * (hw + 0.3))
                if furniture_ok(p[0], p[1], 0.1) and all(abs(s - c) > 4 for c in cross):
                    sw.add(p[0], p[1], 0.0, 0.08, 0.08, 2.6, h, "pole", (120, 120, 120), True)
                    col = [(230, 230, 230), (30, 80, 160), (200, 30, 30), (40, 120, 60)][int(rng.integers(4))]
                    sw.add(p[0], p[1], 2.2, 0.05, 0.7, 0.7, h, "pole", col, False)
    return sw, placed
