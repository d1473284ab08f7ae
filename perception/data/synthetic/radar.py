"""Automotive radar model after nuScenes' Continental ARS408-21 (RADAR_FRONT and the 4 corners).

What the real sensor gives, and what this model reproduces: a list of at most 125 "clusters" per
sweep, 2-D (z = 0, in the sensor's horizontal plane, x forward, y left), sorted by range, each with
a radar cross-section (RCS, dBsm), a Doppler (radial) velocity and a handful of state codes. Most
clusters (~85% in real nuScenes) are clutter from the static world: walls, poles, the ground and
road edges, and spurious/multipath returns; moving and parked actors give a few each.

How a sweep is made (all vectorized over parts / candidate returns; no per-return Python loop):
1. Parts in the field of view (a wide near lobe and, for the front radar, a narrow far lobe) and in
   the vertical beam get a mean SNR from a simple radar equation (RCS density of the material,
   RADAR_RCS_DBSM, plus 10 log10 of the visible area, minus 40 log10 of the range, plus the far
   lobe's gain). Targets fluctuate (Swerling I): per sweep, each object (all parts of an actor
   together; each static part alone) draws an exponential power factor and is detected when the
   fluctuating SNR beats the threshold, so P_d = exp(-1 / snr) (37% at 0 dB, 90% at +10 dB).
   Pedestrians, cones, bicycles and far objects are therefore often missed; large metal vehicles
   nearby are nearly always seen. A detected part gives 1 + Poisson returns, more the more range x
   azimuth resolution cells (ARS408: ~0.4 m x ~3.2 deg near) its visible extent spans and the
   stronger its material scatters.
2. Each return is placed on a visible (sensor-facing) side face of its part (for actors up to
   scatter_depth_m behind it: the metal behind a plastic fascia, wheel houses), at a height within
   the vertical beam; returns of one object in the same resolution cell merge into one cluster (so
   a pedestrian gives ~1, a near car a few, a bus many); a return is dropped if the straight line
   from the sensor to it passes through any other part (3-D slab test): occluded objects give none.
3. Clutter: rays at random azimuths over the lobes (shared by area: the front's far lobe gets its
   share) and low heights are cast to their first obstacle; the return lies on the ground / kerb /
   road edge uniformly in range before it, or, with probability p_facade when the obstacle is
   static world (facade, wall, pole, tree), on that obstacle. Clutter therefore never appears
   behind a wall and adds the walls' own returns. Spurious multipath ghosts (random positions in
   the lobe, behind walls too, random Doppler, a few flagged invalid) complete the sweep. Real
   sweeps are mostly (~85%) such static-world returns.
4. Noise: range sigma ~0.2 m, azimuth sigma ~0.3 deg (so the lateral error grows with range), the
   ARS408's output resolution (0.2 m positions, 0.25 m/s relative velocity, 0.5 dBsm RCS), then the
   nearest max_returns are kept (the sensor reports clusters sorted by range), which in a busy
   scene also drops the farthest targets.

Doppler, as the nuScenes fields define it (sensor frame): with u the unit line of sight,
    vx, vy           = (u . (v_obj - v_sensor)) u      raw radial relative velocity, as a vector
    vx_comp, vy_comp = (u . v_obj) u                  ego-motion-compensated radial velocity
so the static world has vx_comp ~ vy_comp ~ 0 while its vx, vy reflect the ego motion.

State codes follow what real nuScenes files hold: invalid_state 0 (valid), ambig_state 3
(unambiguous), is_quality_valid 1, so the devkit's default filters keep them; a few spurious returns
are flagged invalid (invalid_state 7 "outside field of view" or 14 "harmonics", ambig_state 0,
dyn_prop 4 "unknown", rms codes 0), which the default filters drop, as on real data. dyn_prop
"stopped" (7) is never produced (the devkit's default dynprop filter would drop it).
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

import numpy as np

from perception.data.synthetic.geometry import RADAR_RCS_DBSM, Snapshot

__all__ = ["RadarModel", "FRONT_RADAR", "CORNER_RADAR", "RADAR_FIELDS", "simulate_radar",
           "write_radar_pcd"]

RADAR_FIELDS = ("x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp",
                "is_quality_valid", "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0",
                "vx_rms", "vy_rms")
# Binary layout of the real files (header SIZE / TYPE lines): F = float, I = signed int.
_PCD_DTYPE = np.dtype([
    ("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("dyn_prop", "i1"), ("id", "<i2"), ("rcs", "<f4"),
    ("vx", "<f4"), ("vy", "<f4"), ("vx_comp", "<f4"), ("vy_comp", "<f4"),
    ("is_quality_valid", "i1"), ("ambig_state", "i1"), ("x_rms", "i1"), ("y_rms", "i1"),
    ("invalid_state", "i1"), ("pdh0", "i1"), ("vx_rms", "i1"), ("vy_rms", "i1"),
])
# Real nuScenes radar files carry 3,726 zero bytes after the points; the devkit's reader also
# asserts that data remain after the last field, so a trailer is required, not cosmetic.
_PCD_TRAILER = bytes(3726)


@dataclass(frozen=True)
class RadarModel:
    """Parameters of one radar (defaults: the front long-range radar, see FRONT_RADAR/CORNER_RADAR).

    max_returns:        clusters reported per sweep at most (nuScenes: 125)
    near_fov_deg:       half-angle of the wide near lobe, degrees from boresight (sensor +x)
    near_range_m:       reach of the near lobe, metres
    far_fov_deg:        half-angle of the narrow far lobe, degrees (0 disables it)
    far_range_m:        reach of the far lobe, metres
    min_range_m:        no return nearer than this (near-field blind zone), metres
    elevation_deg:      half-angle of the vertical beam, degrees
    snr_offset_db:      radar-equation constant: mean snr = rcs - 40 log10(range / 10 m) + this, dB
                        above the detection threshold (Swerling I: P_d = exp(-10^(-snr/10)))
    far_gain_db:        extra gain inside the far lobe (narrow, high-gain beam)
    az_cell_deg:        azimuth resolution cell, degrees (returns of one object in a cell merge)
    range_cell_m:       range resolution cell, metres
    returns_per_cell:   expected returns per resolution cell of a 0 dBsm/m^2 surface
    max_returns_per_part: cap on an actor part's expected returns when detected
    max_returns_static: the same cap for a static part (a long facade spans many cells)
    scatter_depth_m:    an actor's scattering centres lie up to this far behind its visible face
    clutter_rate:       expected ground / road-edge / facade clutter returns per sweep
    p_facade:           share of clutter rays that end on a static obstacle and return from it
    spurious_rate:      expected spurious (multipath / ghost) returns per sweep
    invalid_fraction:   fraction of spurious returns flagged invalid (dropped by the devkit filters)
    range_sigma_m:      range noise sigma, metres (plus range_sigma_rel * range)
    range_sigma_rel:    range-proportional part of the range noise
    azimuth_sigma_deg:  azimuth noise sigma, degrees (lateral error grows with range)
    velocity_sigma:     radial velocity noise sigma, m/s
    rcs_sigma_db:       per-return RCS scatter, dB
    stationary_speed:   |compensated radial velocity| below this is called stationary, m/s
    """

    max_returns: int = 125
    near_fov_deg: float = 45.0
    near_range_m: float = 70.0
    far_fov_deg: float = 9.0
    far_range_m: float = 200.0
    min_range_m: float = 0.5
    elevation_deg: float = 14.0
    snr_offset_db: float = 16.0
    far_gain_db: float = 8.0
    az_cell_deg: float = 3.2
    range_cell_m: float = 0.4
    returns_per_cell: float = 0.3
    max_returns_per_part: float = 4.0
    max_returns_static: float = 6.0
    scatter_depth_m: float = 0.3
    clutter_rate: float = 80.0
    p_facade: float = 0.3
    spurious_rate: float = 8.0
    invalid_fraction: float = 0.3
    range_sigma_m: float = 0.15
    range_sigma_rel: float = 0.002
    azimuth_sigma_deg: float = 0.3
    velocity_sigma: float = 0.1
    rcs_sigma_db: float = 3.0
    stationary_speed: float = 0.5

    @property
    def max_range_m(self) -> float:
        """Furthest reach of either lobe, metres."""
        return max(self.near_range_m, self.far_range_m if self.far_fov_deg > 0 else 0.0)


# RADAR_FRONT: wide near lobe +-45 deg to 70 m and the long-range lobe +-9 deg to 200 m.
FRONT_RADAR = RadarModel()
# RADAR_FRONT_LEFT/RIGHT, RADAR_BACK_LEFT/RIGHT: +-60 deg to 70 m, no long-range lobe, so a
# smaller area of ground and structures: fewer clutter returns than the front.
CORNER_RADAR = RadarModel(near_fov_deg=60.0, near_range_m=70.0, far_fov_deg=0.0, far_range_m=0.0,
                          clutter_rate=65.0, spurious_rate=5.0)


def _in_fov(rng_m: np.ndarray, az: np.ndarray, model: RadarModel) -> np.ndarray:
    """Whether points at horizontal range rng_m (m) and azimuth az (rad, from boresight) are seen."""
    a = np.abs(az)
    near = (a <= np.radians(model.near_fov_deg)) & (rng_m <= model.near_range_m)
    far = (a <= np.radians(model.far_fov_deg)) & (rng_m <= model.far_range_m)
    return (near | far) & (rng_m >= model.min_range_m)


def _first_hit(origin: np.ndarray, targets: np.ndarray, parts, own: np.ndarray,
               t_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segments origin + t (targets[n] - origin), t in [0, t_max[n]): (N,) float, the smallest t
    at which each enters a part other than own[n] (own empty or -1: none excluded; inf where it
    enters none), and (N,) int64, that part's index (-1: none).

    Exact 3-D slab test per (segment, part) pair; the pairs are first culled in 2-D by azimuth
    (a part's bounding circle seen from the origin) and distance, so only a few per segment remain."""
    n, m = len(targets), len(parts)
    out = np.full(n, np.inf)
    first = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0:
        return out, first
    d = targets - origin  # (N, 3)
    # 2-D cull: the segment's bearing must lie within the part's bounding circle's angular span,
    # and the circle must start before the segment ends.
    cx, cy0 = parts.center[:, 0] - origin[0], parts.center[:, 1] - origin[1]
    pdist = np.hypot(cx, cy0)
    rad = 0.5 * np.hypot(parts.size[:, 0], parts.size[:, 1])
    pang = np.arctan2(cy0, cx)
    span = np.where(pdist > rad, np.arcsin(np.minimum(rad / np.maximum(pdist, 1e-9), 1.0)), np.pi)
    seg_len = np.hypot(d[:, 0], d[:, 1]) * t_max
    seg_ang = np.arctan2(d[:, 1], d[:, 0])
    dang = np.abs(np.mod(seg_ang[:, None] - pang[None, :] + np.pi, 2 * np.pi) - np.pi)
    near = pdist - rad
    si, pi_ = np.nonzero((dang <= span[None, :] + 1e-3) & (near[None, :] < seg_len[:, None]))
    if len(own):
        keep = own[si] != pi_
        si, pi_ = si[keep], pi_[keep]
    if len(si) == 0:
        return out, first
    c, s = np.cos(parts.yaw[pi_]), np.sin(parts.yaw[pi_])
    ox, oy = -cx[pi_], -cy0[pi_]
    px, py = c * ox + s * oy, -s * ox + c * oy
    pz = origin[2] - parts.center[pi_, 2]
    dx, dy, dz = d[si, 0], d[si, 1], d[si, 2]
    qx, qy = c * dx + s * dy, -s * dx + c * dy
    half = 0.5 * parts.size[pi_]
    t_lo = np.zeros(len(si))
    t_hi = t_max[si].astype(np.float64).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for p, q, h in ((px, qx, half[:, 0]), (py, qy, half[:, 1]), (pz, dz, half[:, 2])):
            inv = 1.0 / q
            a, b = (-h - p) * inv, (h - p) * inv
            t_lo = np.fmax(t_lo, np.fmin(a, b))
            t_hi = np.fmin(t_hi, np.fmax(a, b))
    hit = t_lo < t_hi
    si, pi_, t_lo = si[hit], pi_[hit], t_lo[hit]
    np.minimum.at(out, si, t_lo)
    is_first = t_lo == out[si]
    first[si[is_first]] = pi_[is_first]
    return out, first


def _occluded(origin: np.ndarray, targets: np.ndarray, parts, own: np.ndarray) -> np.ndarray:
    """(N,) bool: the segment from origin (3,) to each target (N, 3), global frame, passes through a
    part other than own[n] (-1: none excluded). The segment stops 5 cm short of the target so a
    return on a face is not hidden by that face."""
    if len(targets) == 0 or len(parts) == 0:
        return np.zeros(len(targets), dtype=bool)
    length = np.linalg.norm(targets - origin, axis=1)
    t_end = np.clip(1.0 - 0.05 / np.maximum(length, 1e-6), 0.0, 1.0)
    return np.isfinite(_first_hit(origin, targets, parts, own, t_end)[0])


def simulate_radar(snapshot: Snapshot, global_T_sensor: np.ndarray, sensor_velocity: np.ndarray,
                   rng: np.random.Generator, model: RadarModel = FRONT_RADAR) -> np.ndarray:
    """Simulate one radar sweep.

    snapshot:        the world at the sweep's timestamp (global frame)
    global_T_sensor: (4, 4) float64, maps sensor-frame points (x forward, y left, z up) to global
    sensor_velocity: (3,) the sensor's velocity in the global frame, m/s
    rng:             randomness (same seed, same sweep)
    Returns (N, 18) float32 in the nuScenes radar field order (RADAR_FIELDS), sensor frame, z = 0,
    sorted by range, id = 0..N-1, N <= model.max_returns.
    """
    T = np.asarray(global_T_sensor, dtype=np.float64)
    R, origin = T[:3, :3], T[:3, 3]
    v_sensor = np.asarray(sensor_velocity, dtype=np.float64)
    parts = snapshot.parts
    max_r = model.max_range_m
    tan_el = np.tan(np.radians(model.elevation_deg))
    boresight = float(np.arctan2(R[1, 0], R[0, 0]))  # global heading of the sensor's +x

    # ---- 1. candidate parts: in range, in azimuth (with the part's angular half-width), in beam ----
    cand = np.zeros(0, dtype=np.int64)
    if len(parts):
        c = parts.center
        dx, dy = c[:, 0] - origin[0], c[:, 1] - origin[1]
        dist = np.hypot(dx, dy)
        half_diag = 0.5 * np.hypot(parts.size[:, 0], parts.size[:, 1])
        az = np.mod(np.arctan2(dy, dx) - boresight + np.pi, 2 * np.pi) - np.pi
        ang_half = np.arctan2(half_diag, np.maximum(dist, 1e-3))
        wide = np.radians(max(model.near_fov_deg, model.far_fov_deg))
        zlo, zhi = c[:, 2] - 0.5 * parts.size[:, 2], c[:, 2] + 0.5 * parts.size[:, 2]
        reach = np.maximum(dist - half_diag, 0.0) * tan_el
        in_beam = (zlo < origin[2] + reach + 0.5) & (zhi > origin[2] - reach - 0.5)
        ok = ((dist - half_diag < max_r) & (np.abs(az) - ang_half < wide) & in_beam
              & (dist + half_diag > model.min_range_m))
        cand = np.flatnonzero(ok)

    pos_list, own_list, kind_list = [], [], []  # kind: 0 part return, 1 clutter, 2 spurious
    if len(cand):
        k = cand
        cy, sy = np.cos(parts.yaw[k]), np.sin(parts.yaw[k])
        L, W = parts.size[k, 0], parts.size[k, 1]
        dx, dy = parts.center[k, 0] - origin[0], parts.center[k, 1] - origin[1]
        dist = np.maximum(np.hypot(dx, dy), 0.1)
        # Unit line of sight to the centre in the part frame; faces whose outward normal points
        # back to the sensor are visible. Projected widths: face +-x has width W, face +-y width L.
        ux, uy = -(cy * dx + sy * dy) / dist, -(-sy * dx + cy * dy) / dist
        wx, wy = W * np.abs(ux), L * np.abs(uy)  # projected widths of the visible x- and y-face
        zlo = parts.center[k, 2] - 0.5 * parts.size[k, 2]
        zhi = parts.center[k, 2] + 0.5 * parts.size[k, 2]
        reach = dist * tan_el
        vz_lo = np.maximum(zlo, np.maximum(origin[2] - reach, 0.0))
        vz_hi = np.minimum(zhi, origin[2] + reach)
        vis_h = np.maximum(vz_hi - vz_lo, 0.0)
        area = (wx + wy) * vis_h
        dens = RADAR_RCS_DBSM[parts.material[k]].astype(np.float64)
        rcs_part = dens + 10.0 * np.log10(np.maximum(area, 1e-4))
        az_c = np.mod(np.arctan2(dy, dx) - boresight + np.pi, 2 * np.pi) - np.pi
        in_far = (np.abs(az_c) <= np.radians(model.far_fov_deg)) & (model.far_fov_deg > 0)
        snr = (rcs_part - 40.0 * np.log10(np.maximum(dist, 1.0) / 10.0) + model.snr_offset_db
               + np.where(in_far, model.far_gain_db, 0.0))
        # Swerling-I target: the echo power of a complex target fluctuates from sweep to sweep
        # (exponentially distributed around its mean) as its scatterers add up with varying
        # phase. One draw per object (all parts of an actor share it) and per static part;
        # detected when the fluctuating SNR beats the threshold (snr = 0 dB). Its mean gives
        # P_d = exp(-1 / snr_lin): 37% at 0 dB, 90% at +10 dB, 4% at -5 dB.
        inst = parts.instance[k]
        key = np.where(inst >= 0, inst, -1 - np.arange(len(k)))
        _, grp = np.unique(key, return_inverse=True)
        fade = rng.exponential(1.0, int(grp.max()) + 1)[grp]
        detected = (fade * 10.0 ** (snr / 10.0) > 1.0) & (vis_h > 0)
        # A detected part gives one return plus more the more resolution cells its visible extent
        # spans (angular width and depth in range), and the stronger its material scatters.
        cells = (np.degrees((wx + wy) / dist) / model.az_cell_deg
                 + (W * np.abs(uy) + L * np.abs(ux)) / model.range_cell_m)
        extra = np.minimum(cells * model.returns_per_cell * 10.0 ** (dens / 20.0),
                           np.where(inst >= 0, model.max_returns_per_part, model.max_returns_static) - 1.0)
        n_ret = np.where(detected, 1 + rng.poisson(np.maximum(extra, 0.0)), 0)
        if n_ret.sum():
            j = np.repeat(np.arange(len(k)), n_ret)  # index into cand for each return
            nr = len(j)
            # Pick the x-face or y-face by projected width, then a uniform spot on it.
            use_x = rng.random(nr) * (wx[j] + wy[j]) < wx[j]
            s = rng.random(nr) - 0.5
            # Scattering centres of actors sit a little behind the visible face (the metal behind a
            # plastic fascia, wheel houses, the frame): up to scatter_depth_m, at most half the part.
            dep = rng.random(nr) * np.where(parts.instance[k[j]] >= 0, model.scatter_depth_m, 0.0)
            lx = np.where(use_x, np.sign(ux[j]) * (0.5 * L[j] - np.minimum(dep, 0.5 * L[j])), s * L[j])
            ly = np.where(use_x, s * W[j], np.sign(uy[j]) * (0.5 * W[j] - np.minimum(dep, 0.5 * W[j])))
            gx = parts.center[k[j], 0] + cy[j] * lx - sy[j] * ly
            gy = parts.center[k[j], 1] + sy[j] * lx + cy[j] * ly
            gz = vz_lo[j] + rng.random(nr) * vis_h[j]
            # The sensor reports one cluster per resolution cell: returns of the same object (an
            # actor, or one static part) in the same range x azimuth cell merge into one.
            gr = np.hypot(gx - origin[0], gy - origin[1])
            ga = np.mod(np.arctan2(gy - origin[1], gx - origin[0]) - boresight + np.pi, 2 * np.pi)
            n_az = int(np.ceil(2 * np.pi / np.radians(model.az_cell_deg))) + 1
            cell = ((grp[j] * (int(max_r / model.range_cell_m) + 2)
                     + np.floor(gr / model.range_cell_m).astype(np.int64)) * n_az
                    + np.floor(ga / np.radians(model.az_cell_deg)).astype(np.int64))
            _, first_of = np.unique(cell, return_index=True)
            first_of = np.sort(first_of)
            pos_list.append(np.stack([gx, gy, gz], axis=1)[first_of])
            own_list.append(k[j][first_of])
            kind_list.append(np.zeros(len(first_of), dtype=np.int64))

    # ---- 3. ground / road-edge clutter, facade returns and spurious ghosts over the field of view ----
    n_cl, n_sp = rng.poisson(model.clutter_rate), rng.poisson(model.spurious_rate)
    n_bg = n_cl + n_sp
    if n_bg:
        near_share = model.near_range_m * model.near_fov_deg
        far_share = (model.far_range_m * model.far_fov_deg) if model.far_fov_deg > 0 else 0.0
        in_far = rng.random(n_bg) * (near_share + far_share) >= near_share
        fov = np.radians(np.where(in_far, model.far_fov_deg, model.near_fov_deg))
        rmax = np.where(in_far, model.far_range_m, model.near_range_m)
        rmin = model.min_range_m + 2.0
        aa = boresight + (2.0 * rng.random(n_bg) - 1.0) * fov
        ca, sa = np.cos(aa), np.sin(aa)
        gz = rng.uniform(0.1, 0.6, n_bg)
        rr = rmax.astype(np.float64).copy()
        facade = np.zeros(n_bg, dtype=bool)
        own_bg = np.full(n_bg, -1, dtype=np.int64)
        cl = np.arange(n_bg) < n_cl
        if n_cl and len(cand):
            # Clutter comes from what the beam sees: ground, kerbs and road edges up to the first
            # obstacle along the ray, and the obstacle itself when it is part of the static world
            # (a facade, wall, pole or tree: each such ray, with probability p_facade, returns
            # from that surface instead of the ground in front of it).
            sub = parts.select(cand)
            ends = np.stack([origin[0] + rmax[cl] * ca[cl], origin[1] + rmax[cl] * sa[cl], gz[cl]], axis=1)
            t, hit_part = _first_hit(origin, ends, sub, np.zeros(0, dtype=np.int64), np.ones(n_cl))
            hit = hit_part >= 0
            stat = hit.copy()
            stat[hit] = sub.instance[hit_part[hit]] < 0   # the obstacle is static world
            on_face = stat & (rng.random(n_cl) < model.p_facade)
            r_hit = np.where(hit, t * rmax[cl], rmax[cl])
            ground = rmin + rng.uniform(0.0, 1.0, n_cl) * np.maximum(r_hit - rmin, 0.0)
            r_cl = np.where(on_face, r_hit, ground)
            rr[cl] = r_cl
            idx_cl = np.flatnonzero(cl)
            facade[idx_cl[on_face]] = True
            own_bg[idx_cl[on_face]] = cand[hit_part[on_face]]
            # Rays blocked before the blind zone give nothing.
            rr[idx_cl[hit & ~on_face & (r_hit <= rmin)]] = -1.0
        else:
            rr[cl] = rng.uniform(rmin, rmax[cl])
        # Multipath ghosts: anywhere in the lobe, behind walls too (mirror images of real targets).
        rr[~cl] = rng.uniform(rmin, rmax[~cl])
        ok = rr > 0
        pos_list.append(np.stack([origin[0] + rr * ca, origin[1] + rr * sa, gz], axis=1)[ok])
        own_list.append(own_bg[ok])
        kind_list.append(np.where(cl, np.where(facade, 3, 1), 2)[ok])

    if not pos_list:
        return np.zeros((0, 18), dtype=np.float32)
    pos = np.concatenate(pos_list)
    own = np.concatenate(own_list)
    kind = np.concatenate(kind_list)

    # ---- field of view (exact, per return) and occlusion ----
    rel = pos - origin
    local = rel @ R  # sensor frame
    rh = np.hypot(local[:, 0], local[:, 1])
    az = np.arctan2(local[:, 1], local[:, 0])
    keep = _in_fov(rh, az, model)
    if keep.any() and len(cand):
        sub = parts.select(cand)
        own_sub = np.full(len(own), -1, dtype=np.int64)
        has = own >= 0
        own_sub[has] = np.searchsorted(cand, own[has])
        # Clutter rays already end at their first obstacle and facade returns sit on it; ghosts
        # are not line-of-sight returns. Only the part returns need the test.
        idx = np.flatnonzero(keep & (kind == 0))
        keep[idx[_occluded(origin, pos[idx], sub, own_sub[idx])]] = False
    pos, own, kind, local, rh, az = (a[keep] for a in (pos, own, kind, local, rh, az))
    n = len(pos)
    if n == 0:
        return np.zeros((0, 18), dtype=np.float32)

    # ---- velocities (global), line of sight (sensor frame, horizontal) ----
    v_obj = np.zeros((n, 3))
    is_part = own >= 0
    v_obj[is_part] = parts.velocity[own[is_part]]
    spurious = kind == 2
    v_obj_s = v_obj @ R  # object velocity in the sensor frame
    v_sen_s = v_sensor @ R
    u = np.stack([np.cos(az), np.sin(az)], axis=1)
    radial_c = np.einsum("ij,ij->i", v_obj_s[:, :2], u)
    radial_c += rng.normal(0.0, model.velocity_sigma, n)
    # Multipath ghosts carry a random Doppler.
    radial_c[spurious] += rng.normal(0.0, 3.0, int(spurious.sum()))
    radial = radial_c - u @ v_sen_s[:2]

    # ---- position noise (range and azimuth), output resolution ----
    r_noisy = rh + rng.normal(0.0, 1.0, n) * (model.range_sigma_m + model.range_sigma_rel * rh)
    az_noisy = az + rng.normal(0.0, np.radians(model.azimuth_sigma_deg), n)
    x = np.round(r_noisy * np.cos(az_noisy) / 0.2) * 0.2
    y = np.round((r_noisy * np.sin(az_noisy) - 0.1) / 0.2) * 0.2 + 0.1  # ARS408 lateral grid: odd tenths
    rq = np.hypot(x, y)

    # ---- RCS per return ----
    rcs = np.empty(n)
    if is_part.any():
        k = own[is_part]
        dens = RADAR_RCS_DBSM[parts.material[k]].astype(np.float64)
        # A return is one scattering centre: the material density plus a few dB for the patch.
        rcs[is_part] = dens + 10.0 * np.log10(np.maximum(parts.size[k, 2], 0.3)) + 2.0
    rcs[kind == 1] = rng.uniform(-4.0, 3.0, int((kind == 1).sum()))
    # Facade / pole / tree clutter: a patch of the structure, weaker than its specular best.
    fac = kind == 3
    rcs[fac] = RADAR_RCS_DBSM[parts.material[own[fac]]] + rng.uniform(-2.0, 6.0, int(fac.sum()))
    rcs[spurious] = rng.uniform(-5.0, 6.0, int(spurious.sum()))
    rcs = np.clip(np.round((rcs + rng.normal(0.0, model.rcs_sigma_db, n)) * 2.0) / 2.0, -64.0, 63.5)

    # ---- state codes ----
    speed = np.hypot(v_obj[:, 0], v_obj[:, 1])
    moving = (np.abs(radial_c) >= model.stationary_speed) | (speed >= model.stationary_speed)
    # Angle between the object's motion and the line of sight: mostly across it means crossing.
    along = np.abs(radial_c) / np.maximum(speed, 1e-6)
    dyn = np.where(rng.random(n) < 0.35, 3, 1)  # stationary, or stationary candidate
    dyn = np.where(moving & (along < 0.5), 6, dyn)
    dyn = np.where(moving & (along >= 0.5) & (radial_c < 0), 2, dyn)
    dyn = np.where(moving & (along >= 0.5) & (radial_c >= 0), 0, dyn)
    x_rms = np.clip(19 + np.floor(rq / 35.0 + rng.random(n)), 19, 23)
    y_rms = np.clip(19 + np.floor(rq / 25.0 + 2.0 * np.abs(np.sin(az)) + rng.random(n)), 19, 28)
    vx_rms = np.clip(16 + np.floor(rq / 60.0 + rng.random(n) * 0.8), 16, 21)
    pdh0 = np.where(kind == 0, np.where(rcs > 0.0, 1, 3), np.where(spurious, 6, 3))
    invalid = np.zeros(n)
    ambig = np.full(n, 3.0)
    vy_rms = np.full(n, 3.0)
    bad = spurious & (rng.random(n) < model.invalid_fraction)
    invalid[bad] = np.where(rng.random(int(bad.sum())) < 0.5, 7, 14)
    ambig[bad] = 0
    dyn = np.where(bad, 4, dyn)
    x_rms[bad] = y_rms[bad] = vx_rms[bad] = vy_rms[bad] = 0

    vq = np.round(radial / 0.25) * 0.25  # ARS408 relative velocity resolution
    ux, uy = x / np.maximum(rq, 1e-6), y / np.maximum(rq, 1e-6)

    out = np.zeros((n, 18), dtype=np.float64)
    out[:, 0], out[:, 1] = x, y
    out[:, 3] = dyn
    out[:, 5] = rcs
    out[:, 6], out[:, 7] = vq * ux, vq * uy
    out[:, 8], out[:, 9] = radial_c * ux, radial_c * uy
    out[:, 10] = 1
    out[:, 11] = ambig
    out[:, 12], out[:, 13] = x_rms, y_rms
    out[:, 14] = invalid
    out[:, 15] = pdh0
    out[:, 16], out[:, 17] = vx_rms, vy_rms

    # The sensor reports clusters sorted by range and truncates the list.
    order = np.argsort(rq, kind="stable")[: model.max_returns]
    out = out[order]
    out[:, 4] = np.arange(len(out))
    return out.astype(np.float32)


def write_radar_pcd(path: str | PathLike, points: np.ndarray) -> None:
    """Write a sweep as the binary .pcd of real nuScenes radar files.

    points: (N, 18) in RADAR_FIELDS order (any numeric dtype; integer fields are cast).
    Header, field sizes and types match the real files; N = 0 is written as one all-NaN point, the
    devkit's marker of an empty cloud (its reader requires WIDTH > 0).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 18:
        raise ValueError(f"points must be (N, 18), got {pts.shape}")
    n = len(pts)
    rec = np.zeros(max(n, 1), dtype=_PCD_DTYPE)
    if n == 0:
        for name in ("x", "y", "z", "rcs", "vx", "vy", "vx_comp", "vy_comp"):
            rec[name] = np.nan
    else:
        for i, name in enumerate(RADAR_FIELDS):
            if rec.dtype[name].kind == "f":
                rec[name] = pts[:, i]
            else:
                rec[name] = np.rint(pts[:, i])
    w = len(rec)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        f"FIELDS {' '.join(RADAR_FIELDS)}\n"
        "SIZE 4 4 4 1 2 4 4 4 4 4 1 1 1 1 1 1 1 1\n"
        "TYPE F F F I I F F F F F I I I I I I I I\n"
        "COUNT 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n"
        f"WIDTH {w}\n"
        "HEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {w}\n"
        "DATA binary\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())
        f.write(_PCD_TRAILER)
