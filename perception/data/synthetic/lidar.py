"""Spinning LiDAR model after nuScenes' LIDAR_TOP, a Velodyne HDL-32E.

The instrument: 32 lasers fanned from -30.67 deg to +10.67 deg elevation (1.33 deg apart), spinning at
20 Hz and firing ~1,084 times a revolution, so a sweep is a (azimuth x beam) grid of rays. Each ray
returns the nearest surface it meets (the ground plane z = 0 or a part, i.e. an oriented box with
vertical sides), with range noise, random dropout and extra loss on weak (dark, far, grazing)
returns. Intensity follows the surface's lidar reflectivity, the incidence angle and the range.

Why it is fast (the world is 2.5-D): every part is a box with vertical sides and a z-extent
[zmin, zmax], and the sensor is treated as level, so all 32 beams fired at one azimuth lie in the
same vertical half-plane. For each (azimuth column, part) pair that survives an angular cull we
intersect the column's horizontal ray with the part's 2-D footprint once (a 2-D slab test giving the
horizontal distances [r_in, r_out] inside the footprint), and then, for all beams at once, solve the
beam's height z(r) = z_s + r * tan(elevation) against [zmin, zmax]: the beam enters through the side
wall at r_in if it is within the box's height there, else through the top (descending beam) or the
bottom (ascending beam) face if that happens before r_out. Nearest hit per ray wins (occlusion).
All of it is numpy over (pair x beam) arrays; there is no per-ray Python loop.

Approximations (documented, deliberate):
- The sweep is instantaneous (one Snapshot); the real sensor's 50 ms rotation smear is not modelled.
- The sensor is treated as level: the ray pattern is laid out around the global vertical through the
  sensor, headings follow the sensor's yaw; a small mount roll/pitch is ignored for ray casting but
  the output is mapped into the sensor frame with the full ``global_T_sensor``.
- Single (strongest = nearest) return; no dual returns, no rain or dust.
- The ego vehicle is not among the parts (contract); its body is modelled here as a box around the
  sensor (see :class:`LidarModel` ``ego_body_*``): low beams that would go down into the car's roof
  or body give no return, as in real nuScenes sweeps where the lowest rings are largely blocked.
  As a final guard every point within the ego exclusion zone (|x| < 1.0 m, |y| < 2.6 m in the sensor's
  horizontal plane, LIDAR_TOP axes: x right, y forward) is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

import numpy as np

from perception.data.synthetic.geometry import LIDAR_REFLECTIVITY, Snapshot

__all__ = ["LidarModel", "echo_mask", "simulate_lidar", "write_lidar_pcd_bin"]


@dataclass(frozen=True)
class LidarModel:
    """Parameters of the spinning LiDAR (defaults: nuScenes' Velodyne HDL-32E).

    beams:                number of lasers; ring index 0 is the lowest beam, beams-1 the highest
    elevation_min_deg:    elevation of ring 0, degrees (negative is down)
    elevation_max_deg:    elevation of the top ring, degrees
    azimuth_steps:        firings per revolution (columns of the ray grid)
    max_range_m:          no return beyond this range (3-D), metres
    range_noise_m:        sigma of the Gaussian range noise along the ray, metres
    dropout:              probability that any return is lost
    weak_dropout:         extra loss probability for the weakest returns (dark, far, grazing)
    weak_signal:          signal scale of that extra loss; signal = reflectivity * cos(incidence)
                          * (10 m / range)^2, loss = weak_dropout * exp(-signal / weak_signal)
    intensity_noise:      sigma of the multiplicative (log-normal) intensity noise
    intensity_range_m:    range at which intensity has fallen to half (1 / (1 + (r / this)^2))
    ego_body_half_x/y:    half-extents (m) of the ego body's outline around the sensor, sensor x / y
                          (LIDAR_TOP axes: x right, y forward)
    ego_roof_drop_m:      how far below the sensor the body's top is next to the sensor, metres
    ego_roof_slope:       how much further the body's top falls per metre away from the sensor (the
                          roof curves down to the hood, trunk and sides). A beam that has descended
                          more than drop + slope * d when it leaves the body outline (at horizontal
                          distance d) is blocked by the ego car. Defaults reproduce the real sweeps'
                          pattern: rings 0-6 largely blocked (ring 0 only returns abeam), ring 8 (-20 deg) and above free.
    ego_exclusion_half_x/y: points with |x| and |y| (sensor frame) inside these are dropped
    write_no_echo_rays: write an entry for every firing, as the real sensor's files do: rays
                          with no echo become a point at ``no_echo_xyz`` (sensor frame, metres,
                          measured on real nuScenes sweeps) with a random intensity
    """

    beams: int = 32
    elevation_min_deg: float = -30.67
    elevation_max_deg: float = 10.67
    azimuth_steps: int = 1084
    max_range_m: float = 100.0
    range_noise_m: float = 0.02
    dropout: float = 0.02
    weak_dropout: float = 0.15
    weak_signal: float = 0.003
    intensity_noise: float = 0.25
    intensity_range_m: float = 80.0
    ego_body_half_x: float = 0.9
    ego_body_half_y: float = 2.0
    ego_roof_drop_m: float = 0.33
    ego_roof_slope: float = 0.24
    ego_exclusion_half_x: float = 1.0
    ego_exclusion_half_y: float = 2.6
    write_no_echo_rays: bool = True
    no_echo_xyz: tuple[float, float, float] = (-0.016, -0.205, -0.006)

    def elevations(self) -> np.ndarray:
        """(beams,) float64 beam elevations, radians, ring 0 first (lowest)."""
        return np.radians(np.linspace(self.elevation_min_deg, self.elevation_max_deg, self.beams))


def _cull_and_pair(parts, origin, psi0, step, n_az, max_range):
    """Angular/range cull of parts and the (part, azimuth column) pairs to test.

    Returns (kidx, col): (P,) part indices and (P,) column indices, both int64. A column a has
    global heading psi0 + a * step; a part is paired with every column whose heading lies inside
    the part's angular extent seen from the sensor (all columns if the sensor is over the part).
    """
    c = parts.center
    hl, hw = 0.5 * parts.size[:, 0], 0.5 * parts.size[:, 1]
    dx, dy = c[:, 0] - origin[0], c[:, 1] - origin[1]
    dist = np.hypot(dx, dy)
    cy, sy = np.cos(parts.yaw), np.sin(parts.yaw)
    # Sensor position in each part's local frame: tells whether the sensor stands over the footprint.
    lx = -(cy * dx + sy * dy)
    ly = -(-sy * dx + cy * dy)
    over = (np.abs(lx) <= hl) & (np.abs(ly) <= hw)
    near = (dist - np.hypot(hl, hw) < max_range) & (parts.size[:, 2] > 0) & (c[:, 2] + 0.5 * parts.size[:, 2] > 0)

    # Footprint corners relative to the sensor; their angles relative to the centre's direction give
    # the angular extent (< pi for a convex footprint that does not contain the sensor).
    sx = np.array([1.0, -1.0, -1.0, 1.0])
    syy = np.array([1.0, 1.0, -1.0, -1.0])
    cxr = dx[:, None] + cy[:, None] * (hl[:, None] * sx) - sy[:, None] * (hw[:, None] * syy)
    cyr = dy[:, None] + sy[:, None] * (hl[:, None] * sx) + cy[:, None] * (hw[:, None] * syy)
    ang_c = np.arctan2(dy, dx)
    delta = np.mod(np.arctan2(cyr, cxr) - ang_c[:, None] + np.pi, 2 * np.pi) - np.pi
    lo = (ang_c + delta.min(axis=1) - psi0) / step
    hi = (ang_c + delta.max(axis=1) - psi0) / step
    a_lo = np.ceil(lo).astype(np.int64)
    n = np.floor(hi).astype(np.int64) - a_lo + 1
    a_lo = np.where(over, 0, a_lo)
    n = np.where(over, n_az, np.clip(n, 0, n_az))
    n = np.where(near, n, 0)

    total = int(n.sum())
    kidx = np.repeat(np.arange(len(parts)), n)
    start = np.cumsum(n) - n
    col = np.mod(np.repeat(a_lo - start, n) + np.arange(total), n_az)
    return kidx, col


@dataclass(frozen=True)
class _Constants:
    """What a sweep needs that depends only on the model and the sensor height."""

    tan_b: np.ndarray        # (B,) tan(elevation) of each beam
    r_ground: np.ndarray     # (B,) float32 horizontal distance at which each beam meets z = 0
    sec: np.ndarray          # (B,) 3-D range per metre of horizontal distance
    sin_el: np.ndarray       # (B,) |sin(elevation)|
    cos_el: np.ndarray       # (B,) cos(elevation)
    blocked: np.ndarray      # (A, B) bool: the ray hits the ego car's body
    no_echo_xyz: np.ndarray  # (3,) float32
    rings: np.ndarray        # (A * B,) float32 ring index of each firing


_CONSTANTS: dict = {}


def _constants(model: LidarModel, z_s: float) -> _Constants:
    key = (model, z_s)
    c = _CONSTANTS.get(key)
    if c is not None:
        return c
    n_az, n_b = model.azimuth_steps, model.beams
    tan_b = np.tan(model.elevations())
    with np.errstate(divide="ignore"):
        r_ground = np.where(tan_b < 0, -z_s / tan_b, np.inf).astype(np.float32)
    # Beams blocked by the ego car: horizontal distance at which each column's ray leaves the body
    # outline; a beam that has dropped below the body's top there hits the roof/body instead.
    phi = 2.0 * np.pi / n_az * np.arange(n_az)
    with np.errstate(divide="ignore"):
        r_exit = np.minimum(model.ego_body_half_x / np.abs(np.cos(phi)),
                            model.ego_body_half_y / np.abs(np.sin(phi)))
    body_top = model.ego_roof_drop_m + model.ego_roof_slope * r_exit
    blocked = (r_exit[:, None] * -tan_b[None, :]) > body_top[:, None]
    sec = np.sqrt(1.0 + tan_b * tan_b)
    c = _Constants(tan_b, r_ground, sec, np.abs(tan_b) / sec, 1.0 / sec, blocked,
                   np.asarray(model.no_echo_xyz, dtype=np.float32),
                   np.tile(np.arange(n_b, dtype=np.float32), n_az))
    for a in vars(c).values():
        a.setflags(write=False)          # shared by every sweep: never modified in place
    if len(_CONSTANTS) > 8:
        _CONSTANTS.clear()
    _CONSTANTS[key] = c
    return c


def simulate_lidar(snapshot: Snapshot, global_T_sensor: np.ndarray, rng: np.random.Generator,
                   model: LidarModel = LidarModel()) -> np.ndarray:
    """Simulate one LiDAR sweep.

    snapshot:        the world at the sweep's timestamp (global frame)
    global_T_sensor: (4, 4) float64, maps sensor-frame points into the global frame
    rng:             randomness for noise and dropout (same seed, same sweep)
    Returns (N, 5) float32: x, y, z in the sensor frame (m), intensity (0..255, integer-valued),
    ring index (0..beams-1, 0 = lowest beam). Points are ordered by firing (azimuth column), then ring,
    like real nuScenes sweeps. Rays that hit nothing within range (sky) give no point.
    """
    T = np.asarray(global_T_sensor, dtype=np.float64)
    R, origin = T[:3, :3], T[:3, 3]
    z_s = float(origin[2])
    n_az, n_b = model.azimuth_steps, model.beams
    step = 2.0 * np.pi / n_az
    psi0 = float(np.arctan2(R[1, 0], R[0, 0]))  # global heading of the sensor's x axis
    psi = psi0 + step * np.arange(n_az)
    cos_a, sin_a = np.cos(psi), np.sin(psi)
    k = _constants(model, z_s)
    tan_b = k.tan_b
    # Cap the horizontal search: no beam reaches further than max_range horizontally.
    max_r = model.max_range_m

    parts = snapshot.parts
    part_min = np.full((n_az, n_b), np.inf, dtype=np.float32)
    win = np.full((n_az, n_b), -1, dtype=np.int64)  # winning pair index per ray
    kidx = np.zeros(0, dtype=np.int64)
    if len(parts):
        kidx, col = _cull_and_pair(parts, origin, psi0, step, n_az, max_r)
    if len(kidx):
        # 2-D slab test of each column's horizontal ray against the part's footprint, in the part's
        # local frame: origin p, direction q = (cos(psi - yaw), sin(psi - yaw)).
        yaw = parts.yaw[kidx]
        dx = origin[0] - parts.center[kidx, 0]
        dy = origin[1] - parts.center[kidx, 1]
        cy, sy = np.cos(yaw), np.sin(yaw)
        px, py = cy * dx + sy * dy, -sy * dx + cy * dy
        rel = psi[col] - yaw
        qx, qy = np.cos(rel), np.sin(rel)
        hl, hw = 0.5 * parts.size[kidx, 0], 0.5 * parts.size[kidx, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ix, iy = 1.0 / qx, 1.0 / qy
            t1, t2 = (-hl - px) * ix, (hl - px) * ix
            t3, t4 = (-hw - py) * iy, (hw - py) * iy
        txn, tyn = np.minimum(t1, t2), np.minimum(t3, t4)
        r_in = np.maximum(np.maximum(txn, tyn), 0.0)
        r_out = np.minimum(np.maximum(t1, t2), np.maximum(t3, t4))
        ok = (r_out > r_in) & (r_in < max_r)
        x_face = txn > tyn  # which side wall the ray enters through (for the incidence angle)
        kidx, col, r_in, r_out, x_face, qx, qy = (a[ok] for a in (kidx, col, r_in, r_out, x_face, qx, qy))

    if len(kidx):
        # Group pairs by column so the nearest hit per ray is a reduceat over contiguous rows.
        order = np.argsort(col, kind="stable")
        kidx, col, r_in, r_out, x_face, qx, qy = (a[order] for a in (kidx, col, r_in, r_out, x_face, qx, qy))
        zc, hh = parts.center[kidx, 2], 0.5 * parts.size[kidx, 2]
        dz_lo = (zc - hh - z_s).astype(np.float32)[:, None]  # box bottom / top relative to sensor
        dz_hi = (zc + hh - z_s).astype(np.float32)[:, None]
        tb = tan_b.astype(np.float32)[None, :]
        with np.errstate(divide="ignore"):
            inv_tb = (1.0 / tan_b).astype(np.float32)[None, :]
        rin = r_in.astype(np.float32)[:, None]
        rout = r_out.astype(np.float32)[:, None]
        dz_in = rin * tb  # beam height (rel. to sensor) where it enters the footprint
        with np.errstate(invalid="ignore"):
            r_hit = np.where(dz_in > dz_hi, dz_hi * inv_tb,           # above the box: via the top
                             np.where(dz_in < dz_lo, dz_lo * inv_tb,  # below: via the bottom
                                      rin))                            # within: via the side wall
            hit = (r_hit >= rin) & (r_hit <= rout)
        r_hit = np.where(hit, r_hit, np.float32(np.inf))

        starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
        ucol = col[starts]
        group_min = np.minimum.reduceat(r_hit, starts, axis=0)  # (G, B)
        part_min[ucol] = group_min
        group_of_pair = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(col)]))
        is_win = (r_hit == group_min[group_of_pair]) & np.isfinite(r_hit)
        wp, wb = np.nonzero(is_win)
        # Exact ties (coplanar faces) are measure-zero but possible; assignment keeps one of them.
        win[col[wp], wb] = wp

    # Ground plane z = 0 for descending beams (k: per-beam and per-column constants, cached).
    on_part = part_min < k.r_ground[None, :]
    r_h = np.where(on_part, part_min, k.r_ground[None, :])  # horizontal distance of the nearest surface
    valid = np.isfinite(r_h) & (r_h * k.sec[None, :] <= model.max_range_m) & ~k.blocked
    flat = np.flatnonzero(valid)  # row-major: firing order, then ring
    ia, ib = np.divmod(flat, n_b)
    r = r_h.ravel()[flat].astype(np.float64)
    tb = tan_b[ib]
    part_hit = on_part.ravel()[flat]

    gx = origin[0] + r * cos_a[ia]
    gy = origin[1] + r * sin_a[ia]

    # Material and incidence: sin(elevation) for horizontal faces, the horizontal direction's
    # component along the wall normal times cos(elevation) for side walls.
    sin_el = k.sin_el[ib]
    material = snapshot.ground.material_at(gx, gy)
    cos_inc = sin_el.copy()
    if part_hit.any():
        pi = win.ravel()[flat[part_hit]]
        material[part_hit] = parts.material[kidx[pi]]
        side = r_h.ravel()[flat[part_hit]] <= r_in[pi].astype(np.float32)
        wall = np.where(x_face[pi], np.abs(qx[pi]), np.abs(qy[pi])) * k.cos_el[ib[part_hit]]
        cos_inc[part_hit] = np.where(side, wall, sin_el[part_hit])
    np.clip(cos_inc, 0.0, 1.0, out=cos_inc)
    refl = LIDAR_REFLECTIVITY[material].astype(np.float64)

    rng3 = r * k.sec[ib]
    # Loss: a fixed random dropout plus more for weak echoes (dark, far, grazing surfaces).
    signal = refl * cos_inc * (10.0 / np.maximum(rng3, 1.0)) ** 2
    p_loss = model.dropout + model.weak_dropout * np.exp(-signal / model.weak_signal)
    keep = rng.random(len(r)) >= p_loss

    # Gaussian range noise along the ray: scale the hit point about the sensor.
    noisy = rng3 + rng.normal(0.0, model.range_noise_m, len(r))
    scale = noisy / rng3
    pts_g = np.empty((len(r), 3))
    np.multiply(gx - origin[0], scale, out=pts_g[:, 0])
    np.multiply(gy - origin[1], scale, out=pts_g[:, 1])
    np.multiply(r * tb, scale, out=pts_g[:, 2])

    # Intensity: reflectivity (0..1 -> 0..255) with a Lambert-like falloff that keeps grazing returns
    # visible (as the real sensor's calibrated intensities do) and a gentle range falloff.
    inten = 255.0 * refl * (0.3 + 0.7 * cos_inc) / (1.0 + (rng3 / model.intensity_range_m) ** 2)
    inten *= np.exp(rng.normal(0.0, model.intensity_noise, len(r)))
    inten = np.clip(np.rint(inten), 0, 255)

    pts_s = pts_g @ R  # R^T (p - o), row-vector form
    keep &= ~((np.abs(pts_s[:, 0]) < model.ego_exclusion_half_x)
              & (np.abs(pts_s[:, 1]) < model.ego_exclusion_half_y))

    if not model.write_no_echo_rays:
        out = np.empty((int(keep.sum()), 5), dtype=np.float32)
        out[:, :3] = pts_s[keep]
        out[:, 3] = inten[keep]
        out[:, 4] = ib[keep]
        return out

    # Real nuScenes sweeps hold one entry per firing: a ray with no echo (sky, lost, blocked by the
    # ego car) is still written, as a point ~0.2 m from the sensor with an arbitrary intensity, so
    # every ring has exactly `azimuth_steps` entries (34.7k points a sweep). Reproduce that layout,
    # firing order then ring, so that point counts and ring statistics match the real files.
    # Random numbers are drawn for the no-echo entries only (16-25 % of a sweep).
    grid = np.empty((n_az * n_b, 5), dtype=np.float32)
    grid[:, 4] = k.rings
    rows = flat[keep]
    grid[rows, :3] = pts_s[keep]
    grid[rows, 3] = inten[keep]
    empty = np.ones(n_az * n_b, dtype=bool)
    empty[rows] = False
    empty = np.flatnonzero(empty)
    noise = rng.standard_normal((len(empty), 3), dtype=np.float32)
    noise *= np.float32(0.002)
    grid[empty, :3] = k.no_echo_xyz + noise
    grid[empty, 3] = rng.integers(0, 128, len(empty))
    return grid


def echo_mask(points: np.ndarray, model: LidarModel = LidarModel()) -> np.ndarray:
    """(N,) bool: True for real echoes, False for the entries of rays with no echo.

    Those sit within centimetres of ``model.no_echo_xyz``, inside the ego exclusion zone
    where no echo is ever kept, so the split is exact."""
    d = np.asarray(points)[:, :3] - np.asarray(model.no_echo_xyz, dtype=np.float32)
    return np.einsum("ij,ij->i", d, d) > 0.1 ** 2


def write_lidar_pcd_bin(path: str | PathLike, points: np.ndarray) -> None:
    """Write a sweep as nuScenes .pcd.bin: raw little-endian float32, 5 values per point
    (x, y, z, intensity, ring), no header. ``points``: (N, 5), any float dtype."""
    pts = np.ascontiguousarray(np.asarray(points), dtype="<f4")
    if pts.ndim != 2 or pts.shape[1] != 5:
        raise ValueError(f"points must be (N, 5), got {pts.shape}")
    pts.tofile(str(path))
