"""Camera model of the synthetic world: renders a :class:`Snapshot` into an RGB image.

The renderer is a small CPU rasterizer built from OpenCV primitives, fast enough for ~1,400
images per scene (~10 ms per 640 x 360 image on one core, plus ~1 ms of JPEG encoding; measured
in docs/data.md, "Speed"):

* Background: the ground plane z = 0 maps to the image by a homography, so the ground raster
  (:class:`GroundMap`, coloured and textured once per map) is warped into the image with one
  ``cv2.warpPerspective``: that is the ray / z = 0 intersection and material lookup of every
  pixel, done in C. Sky colour and haze depend only on the ray direction, so they are computed
  on a coarse grid of rays and interpolated up.
* Parts (oriented boxes) are drawn with the painter's algorithm: each visible part's front faces
  are filled with ``cv2.fillConvexPoly`` (a convex box's front faces never overlap each other),
  parts from far to near. "Far to near" is not a centroid sort, which fails for long buildings
  next to parked cars: any two parts whose image rectangles overlap are ordered exactly by a
  separating plane (boxes only rotate about z, so one of their face planes separates them if
  they do not intersect), and the draw order is a topological sort of those constraints.
* Faces crossing the near plane (z = NEAR in the camera frame) are clipped in 3-D before
  projection, so a part partly behind the camera renders only its front part.
* The instance buffer is filled with the same polygons in the same order, without
  anti-aliasing, so it holds the instance of the visible surface at each pixel.
* Scene lighting (:class:`Lighting`) shades faces by a sun direction, tints and exposes the
  image; the sensor (:class:`CameraModel`) adds blur and noise before JPEG encoding.

Frames: camera frame x right, y down, z forward (OpenCV / nuScenes); ``global_T_camera`` (4, 4)
maps camera-frame points into the global frame. Intrinsics are the (3, 3) pinhole matrix, pixel
(u, v) = integer coordinates of pixel centres (OpenCV convention, as ``view_points``).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .geometry import CAMERA_COLOR, MATERIAL, MATERIAL_NAMES, GroundMap, Parts, Snapshot

NEAR = 0.1  # m: near clipping plane in the camera frame

# Fixed-point polygon vertices for cv2 (sub-pixel accurate edges): value = round(uv * 2**SHIFT).
_SHIFT = 3
_ONE = float(1 << _SHIFT)

# Box faces as corner indices into Parts.corners() (bottom 0-3, top 4-7). Every face is listed
# as (v0, v1, v2, v3) with v1 - v0 along the face's width and v3 - v0 along its height, so a
# point on the face is v0 + a (v1 - v0) + b (v3 - v0), a, b in [0, 1] (used for details).
# Order: +x (front of an object, along yaw), -x, +y (left), -y, bottom, top.
_FACES = np.array([[0, 3, 7, 4], [1, 2, 6, 5], [0, 1, 5, 4], [2, 3, 7, 6],
                   [0, 1, 2, 3], [4, 5, 6, 7]], dtype=np.int64)
_FACE_AXIS = np.array([0, 0, 1, 1, 2, 2])          # which size component is the face normal
_FACE_SIGN = np.array([1.0, -1.0, 1.0, -1.0, -1.0, 1.0])

_M = MATERIAL


# --------------------------------------------------------------------------------------------
# Scene lighting and sensor model
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lighting:
    """Per-scene illumination and atmosphere.

    kind:              "day", "overcast" or "dusk" (informational)
    sun_azimuth:       rad, counter-clockwise from global +x
    sun_elevation:     rad above the horizon
    sun_strength:      direct-light share on a face facing the sun (0..1)
    ambient:           sky-light share on an upward face (0..1)
    exposure:          multiplies all radiances before the tone curve
    color_temperature: K of the light; the camera white balance is fixed at 6500 K, so warm
                       (low) temperatures tint the image orange, high ones blue
    gamma:             tone-curve exponent applied after exposure (1 = linear)
    sky_zenith, sky_horizon: RGB of the sky straight up and at the horizon (pre tone curve);
                       the horizon colour is also the colour of the haze
    haze_distance:     m, e-folding distance of the atmospheric haze (fog)
    sun_glow:          brightness of the halo around the sun in the sky (0..1)
    """

    kind: str = "day"
    sun_azimuth: float = 0.7
    sun_elevation: float = 0.8
    sun_strength: float = 0.45
    ambient: float = 0.65
    exposure: float = 1.0
    color_temperature: float = 6500.0
    gamma: float = 1.0
    sky_zenith: tuple[float, float, float] = (110.0, 150.0, 210.0)
    sky_horizon: tuple[float, float, float] = (200.0, 210.0, 222.0)
    haze_distance: float = 500.0
    sun_glow: float = 0.35

    @property
    def sun_direction(self) -> np.ndarray:
        """(3,) unit vector from the scene towards the sun, global frame."""
        ce = np.cos(self.sun_elevation)
        return np.array([ce * np.cos(self.sun_azimuth), ce * np.sin(self.sun_azimuth),
                         np.sin(self.sun_elevation)])

    @classmethod
    def random(cls, rng: np.random.Generator, kind: str | None = None) -> "Lighting":
        """Draw a plausible lighting: day (45 %), overcast (40 %, like most of nuScenes
        Singapore / Boston), dusk (15 %)."""
        if kind is None:
            kind = str(rng.choice(["day", "overcast", "dusk"], p=[0.45, 0.40, 0.15]))
        u = rng.uniform
        jitter = rng.uniform(-8.0, 8.0, size=(2, 3))
        if kind == "day":
            p = dict(sun_elevation=u(0.45, 1.2), sun_strength=u(0.35, 0.55), ambient=u(0.55, 0.7),
                     exposure=u(0.92, 1.08), color_temperature=u(5300.0, 7200.0),
                     gamma=u(0.95, 1.1), zen=(110.0, 150.0, 210.0), hor=(198.0, 210.0, 225.0),
                     haze_distance=u(350.0, 900.0), sun_glow=0.35)
        elif kind == "overcast":
            p = dict(sun_elevation=u(0.4, 1.2), sun_strength=u(0.02, 0.1), ambient=u(0.85, 1.0),
                     exposure=u(0.9, 1.08), color_temperature=u(6000.0, 7800.0),
                     gamma=u(0.95, 1.1), zen=(178.0, 184.0, 194.0), hor=(208.0, 211.0, 214.0),
                     haze_distance=u(170.0, 400.0), sun_glow=0.05)
        elif kind == "dusk":
            p = dict(sun_elevation=u(0.03, 0.2), sun_strength=u(0.3, 0.5), ambient=u(0.4, 0.55),
                     exposure=u(0.72, 0.92), color_temperature=u(3200.0, 4600.0),
                     gamma=u(1.0, 1.15), zen=(70.0, 85.0, 140.0), hor=(235.0, 172.0, 125.0),
                     haze_distance=u(250.0, 500.0), sun_glow=0.8)
        else:
            raise ValueError(f"unknown lighting kind {kind!r}")
        zen = tuple(float(x) for x in np.clip(np.array(p.pop("zen")) + jitter[0], 0, 255))
        hor = tuple(float(x) for x in np.clip(np.array(p.pop("hor")) + jitter[1], 0, 255))
        return cls(kind=kind, sun_azimuth=u(0.0, 2.0 * np.pi), sky_zenith=zen, sky_horizon=hor,
                   **{k: float(v) for k, v in p.items()})

    def white_balance(self) -> np.ndarray:
        """(3,) RGB gains of the light as seen by a camera balanced for 6500 K (a linear
        approximation of the Planckian locus around daylight, good enough for a tint)."""
        t = float(np.clip((6500.0 - self.color_temperature) / 3500.0, -0.6, 1.0))
        return np.array([1.0 + 0.22 * t, 1.0 + 0.02 * t, 1.0 - 0.30 * t])


@dataclass(frozen=True)
class CameraModel:
    """Sensor and renderer settings.

    noise_sigma:   Gaussian noise std, 8-bit DN per channel (read + shot noise)
    blur_sigma:    px, Gaussian blur of optics / demosaicing (0 disables)
    jpeg_quality:  0..100, for :func:`write_jpeg`
    shadows:       draw sun shadows and contact shadows of parts on the ground
    detail:        draw material details (windows, lights, stripes)
    detail_min_px: a face gets details only if its image is at least this many pixels tall
    max_distance:  m, parts farther than this are not drawn (lost in the haze anyway)
    """

    noise_sigma: float = 2.0
    blur_sigma: float = 0.6
    jpeg_quality: int = 90
    shadows: bool = True
    detail: bool = True
    detail_min_px: float = 5.0
    max_distance: float = 300.0


def write_jpeg(path, image: np.ndarray, quality: int = 90) -> None:
    """Write an (H, W, 3) uint8 RGB image as a JPEG file."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    Path(path).write_bytes(buf.tobytes())


# --------------------------------------------------------------------------------------------
# Tone curve
# --------------------------------------------------------------------------------------------
def _grade(rgb: np.ndarray, lighting: Lighting) -> np.ndarray:
    """Exposure, white balance and tone curve of radiance-like RGB (..., 3) -> display 0..255.

    Applied to the colour sources (sky, ground texture, face colours) rather than to the final
    image: the sources are few, a per-pixel LUT over the frame would cost ~1 ms."""
    x = np.asarray(rgb, dtype=np.float64) / 255.0 * (lighting.exposure * lighting.white_balance())
    return 255.0 * np.clip(x, 0.0, 1.0) ** lighting.gamma


# --------------------------------------------------------------------------------------------
# Caches: things that depend on the map, intrinsics or lighting only, not on the frame
# --------------------------------------------------------------------------------------------
_RAY_CACHE: dict = {}
_RAY_NORM_CACHE: dict = {}   # id(rays) -> (rays, |rays|)
_GRASS_CACHE: dict = {}      # lighting -> graded colour of the ground outside the raster
_NOISE_CACHE: dict = {}
_GROUND_CACHE: dict = {}
_ATMOS_STEP = 8  # px between the rays of the coarse sky / haze grid


def _coarse_rays(intrinsics: np.ndarray, width: int, height: int) -> np.ndarray:
    """(Hc, Wc, 3) camera-frame ray directions (z = 1) of a coarse pixel grid placed so that
    ``cv2.resize(..., (width, height), INTER_LINEAR)`` interpolates them exactly."""
    key = (intrinsics.tobytes(), width, height)
    rays = _RAY_CACHE.get(key)
    if rays is None:
        wc = max(2, int(np.ceil(width / _ATMOS_STEP)))
        hc = max(2, int(np.ceil(height / _ATMOS_STEP)))
        # cv2.resize samples source index j at destination pixel (j + 0.5) * W / Wc - 0.5.
        u = (np.arange(wc) + 0.5) * (width / wc) - 0.5
        v = (np.arange(hc) + 0.5) * (height / hc) - 0.5
        uu, vv = np.meshgrid(u, v)
        pix = np.stack([uu, vv, np.ones_like(uu)], axis=-1)
        rays = pix @ np.linalg.inv(intrinsics).T
        if len(_RAY_CACHE) > 16:
            _RAY_CACHE.clear()
        _RAY_CACHE[key] = rays
    return rays


def _noise_tile(width: int, height: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Pre-generated sensor noise, larger than the image so that a random window of it gives a
    different pattern each frame; stored as saturating-add and -subtract uint8 halves because
    cv2.add / cv2.subtract on uint8 are far cheaper than any float path."""
    key = (width, height, round(sigma, 3))
    tile = _NOISE_CACHE.get(key)
    if tile is None:
        g = np.random.default_rng(0x5EED)
        shape = (height + 97, width + 97)
        # Mostly luminance noise with some chroma, as after demosaicing.
        n = (0.8 * g.standard_normal(shape)[..., None] + 0.6 * g.standard_normal(shape + (3,)))
        n = np.rint(n * sigma)
        tile = (np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8))
        if len(_NOISE_CACHE) > 8:
            _NOISE_CACHE.clear()
        _NOISE_CACHE[key] = tile
    return tile


# Texture of each ground material: amplitude of per-cell grain and of low-frequency blotches.
_GROUND_GRAIN = np.zeros(len(MATERIAL_NAMES), dtype=np.float32)
_GROUND_BLOTCH = np.zeros(len(MATERIAL_NAMES), dtype=np.float32)
for _name, _grain, _blotch in (("road", 0.06, 0.07), ("lane_marking", 0.04, 0.05),
                               ("sidewalk", 0.05, 0.05), ("grass", 0.12, 0.18),
                               ("vegetation", 0.12, 0.18)):
    _GROUND_GRAIN[_M[_name]] = _grain
    _GROUND_BLOTCH[_M[_name]] = _blotch
_GROUND_WINDOW = 4096  # cells: largest ground texture side kept in memory
_TEX_LEVELS = 256     # ground brightness factor steps per unit (the texture's colour table)
_TEX_MAX = 4          # largest brightness factor in the table (grain and blotches: ~1 +- 0.6)


def _ground_texture(ground: GroundMap, cam_xy: np.ndarray, lighting: Lighting):
    """Display-ready (h, w, 4) uint8 RGBA texture of the ground raster (or of a window of it around
    the camera if the raster is huge), lit and graded, plus (row0, col0) of the window.

    Cached per raster, lighting and window: a scene reuses its GroundMap for every snapshot, so the
    colouring (a lookup over the whole raster) happens once per scene and window. The writer
    renders one channel after the other, each going through the whole drive, so a camera that
    crosses from one window into the next comes back to the first one for the next channel: the
    cache keeps windows (least recently used dropped), not one entry per raster, or every channel
    re-textures every window (~2.7 s each). The grain is seeded by the map and window, not the
    frame, so the texture is stable from frame to frame."""
    ids = ground.ids
    h, w = ids.shape
    rc = np.floor((cam_xy[::-1] - (ground.y0, ground.x0)) / ground.resolution).astype(np.int64)
    half = _GROUND_WINDOW // 2
    for key, entry in _GROUND_CACHE.items():
        if key[0] != id(ids) or key[1] != lighting or entry[0] is not ids:
            continue
        r0, c0, tex = entry[1], entry[2], entry[3]
        th, tw = tex.shape[:2]
        # Reuse the window while the camera stays a margin inside it. A window side that lies on
        # the raster's edge needs no margin: there is nothing beyond it to show. (Measuring from
        # the window's centre instead misses for every frame once the window is clipped at an
        # edge, and re-textures the ground for each image.)
        margin = half // 2
        lo = np.array([r0 + margin if r0 > 0 else -np.inf, c0 + margin if c0 > 0 else -np.inf])
        hi = np.array([r0 + th - margin if r0 + th < h else np.inf,
                       c0 + tw - margin if c0 + tw < w else np.inf])
        if np.all((rc >= lo) & (rc <= hi)):
            _GROUND_CACHE[key] = _GROUND_CACHE.pop(key)        # most recently used last
            return tex, r0, c0
    r0 = int(np.clip(rc[0] - half, 0, max(0, h - _GROUND_WINDOW))) if h > _GROUND_WINDOW else 0
    c0 = int(np.clip(rc[1] - half, 0, max(0, w - _GROUND_WINDOW))) if w > _GROUND_WINDOW else 0
    win = ids[r0:r0 + _GROUND_WINDOW, c0:c0 + _GROUND_WINDOW].astype(np.int64)
    g = np.random.default_rng([int(abs(ground.x0) * 100) % (2**31), int(abs(ground.y0) * 100) % (2**31), r0, c0])
    grain = g.standard_normal(win.shape, dtype=np.float32)
    bh, bw = max(2, win.shape[0] // 16), max(2, win.shape[1] // 16)
    blotch = cv2.resize(g.standard_normal((bh, bw), dtype=np.float32), win.shape[::-1],
                        interpolation=cv2.INTER_CUBIC)
    shade = lighting.ambient + lighting.sun_strength * max(0.0, float(lighting.sun_direction[2]))
    factor = 1.0 + _GROUND_GRAIN[win] * grain + _GROUND_BLOTCH[win] * blotch
    # Graded colour of (material, brightness factor) from a table: the factor in steps of
    # 1/_TEX_LEVELS (under one grey level of error), one gather per cell instead of the tone curve
    # over every cell and channel. RGBA: cv2.warpPerspective has a much faster bilinear path for 4
    # channels than for 3.
    levels = np.arange(_TEX_MAX * _TEX_LEVELS + 1, dtype=np.float64) / _TEX_LEVELS
    table = np.empty((len(CAMERA_COLOR), len(levels), 4), dtype=np.uint8)
    table[..., :3] = _grade(CAMERA_COLOR[:, None, :] * (levels * shade)[None, :, None], lighting)
    table[..., 3] = 255
    q = np.clip(factor * np.float32(_TEX_LEVELS), 0, _TEX_MAX * _TEX_LEVELS).astype(np.int32)
    # One 4-byte gather per cell (the RGBA rows viewed as uint32): 3.7x faster than gathering
    # rows of 4 uint8, same bytes.
    rgba = table.view(np.uint32).reshape(-1)[win * len(levels) + q]
    tex = rgba.view(np.uint8).reshape(win.shape + (4,))
    # At most two windows (~67 MB each) in memory: enough for a drive that crosses one boundary.
    while len(_GROUND_CACHE) >= 2:
        _GROUND_CACHE.pop(next(iter(_GROUND_CACHE)))
    _GROUND_CACHE[(id(ids), lighting, r0, c0)] = (ids, r0, c0, tex)
    return tex, r0, c0


# --------------------------------------------------------------------------------------------
# Geometry: culling, face visibility, near-plane clipping, projection
# --------------------------------------------------------------------------------------------
@dataclass
class _View:
    """The parts that can appear in the image, K of them (index into Parts: ``idx``)."""

    idx: np.ndarray        # (K,) int
    cam: np.ndarray        # (K, 8, 3) corners, camera frame
    front: np.ndarray      # (K, 6) bool: face faces the camera
    clipped: np.ndarray    # (K,) bool: crosses the near plane
    fixed: np.ndarray      # (K, 6, 4, 2) int32 fixed-point face polygons (unclipped parts)
    clip_polys: dict       # k -> list of (face, int32 fixed-point polygon) for clipped parts
    rect: np.ndarray       # (K, 4) float image bounds x0, y0, x1, y1 (pixels)
    face_dist: np.ndarray  # (K, 6) m, camera to face centre
    face_px: np.ndarray    # (K, 6, 2) px, rough image width and height of each face
    dmin: np.ndarray       # (K,) m, camera to the nearest point of the part
    dmax: np.ndarray       # (K,) m, camera to the farthest corner


def _rigid_inverse(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = t[:3, :3]
    return r.T, -r.T @ t[:3, 3]


def _project(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(..., 3) camera-frame points with z > 0 -> (..., 2) pixel coordinates."""
    p = points @ intrinsics.T
    return p[..., :2] / p[..., 2:3]


def _clip_near(poly: np.ndarray) -> np.ndarray | None:
    """Sutherland-Hodgman clip of a camera-frame polygon (n, 3) to z >= NEAR."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            out.append(a + (NEAR - a[2]) / (b[2] - a[2]) * (b - a))
    return np.array(out) if len(out) >= 3 else None


def _to_fixed(uv: np.ndarray) -> np.ndarray:
    # Clamp far-off vertices (faces grazing the near plane) to keep cv2's fixed-point maths in
    # int32; +-2^20 px is far outside any image, so the clamp does not move visible edges much.
    return np.rint(np.clip(uv, -2.0**20, 2.0**20) * _ONE).astype(np.int32)


def _frustum_outside(cam: np.ndarray, intrinsics: np.ndarray, width: int, height: int,
                     margin: float = 2.0) -> np.ndarray:
    """(M, n, 3) point sets in the camera frame -> (M,) True where all points are on the outer
    side of one of the four side planes of the view frustum (half-spaces through the camera
    centre, so the test is valid for points behind the camera too)."""
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    x, y, z = cam[..., 0], cam[..., 1], cam[..., 2]
    return (np.all(fx * x + (cx + margin) * z < 0, axis=1)
            | np.all(fx * x + (cx - width - margin) * z > 0, axis=1)
            | np.all(fy * y + (cy + margin) * z < 0, axis=1)
            | np.all(fy * y + (cy - height - margin) * z > 0, axis=1))


def _spheres_visible(centre_g: np.ndarray, radius: np.ndarray, rot: np.ndarray,
                     trans: np.ndarray, intrinsics: np.ndarray, width: int, height: int,
                     max_distance: float, margin: float = 2.0) -> np.ndarray:
    """(M,) bool: bounding spheres (global centres (M, 3), radii (M,)) that may reach the view
    frustum. A cheap first cull, so that per-corner work is only done for parts near the view."""
    c = centre_g @ rot.T + trans
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    planes = np.array([[fx, 0.0, cx + margin], [-fx, 0.0, width + margin - cx],
                       [0.0, fy, cy + margin], [0.0, -fy, height + margin - cy]])
    planes /= np.linalg.norm(planes, axis=1, keepdims=True)
    inside = np.all(c @ planes.T >= -radius[:, None], axis=1)
    return inside & (c[:, 2] + radius > NEAR) & (c[:, 2] - radius < max_distance)


def _prepare(parts: Parts, corners: np.ndarray, global_T_camera: np.ndarray,
             intrinsics: np.ndarray, width: int, height: int,
             max_distance: float = np.inf) -> _View:
    """Cull, back-face cull, near-clip and project the parts; corners = parts.corners()."""
    rot, trans = _rigid_inverse(global_T_camera)
    cam_pos = global_T_camera[:3, 3]
    near = np.nonzero(_spheres_visible(parts.center, 0.5 * np.linalg.norm(parts.size, axis=1),
                                       rot, trans, intrinsics, width, height, max_distance))[0]
    cam = corners[near] @ rot.T + trans                           # (M', 8, 3) camera
    z = cam[..., 2]
    keep = (z.max(axis=1) > NEAR) & (z.min(axis=1) < max_distance)
    keep &= ~_frustum_outside(cam, intrinsics, width, height)
    # Parts entirely in front of the near plane whose image rectangle contains no pixel centre
    # (far away, thinner than a pixel) are dropped: ~10 % of the fills in a long street view.
    zk = np.maximum(z, NEAR)[..., None]
    uv_all = (cam[..., :2] * intrinsics[[0, 1], [0, 1]] + intrinsics[:2, 2] * zk) / zk
    lo, hi = uv_all.min(axis=1), uv_all.max(axis=1)
    tiny = np.any(np.floor(hi) < np.ceil(lo), axis=1) & (z.min(axis=1) > NEAR)
    keep &= ~tiny
    cam = cam[keep]
    idx = near[keep]
    size = parts.size[idx]
    half = size * 0.5

    # Camera position in each part's own frame: gives face visibility (the camera is on the
    # outer side of a front face) and the distance to the part's nearest point.
    c, s = np.cos(parts.yaw[idx]), np.sin(parts.yaw[idx])
    d = cam_pos - parts.center[idx]
    q = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], -1)
    out = q[:, _FACE_AXIS] * _FACE_SIGN - half[:, _FACE_AXIS]             # (K, 6) signed
    front = out > 1e-9
    dmin = np.linalg.norm(np.maximum(np.abs(q) - half, 0.0), axis=1)
    dmax = np.sqrt((cam * cam).sum(axis=-1).max(axis=1))
    # Distance to each face centre: the centre is q's complement along the face normal.
    on_axis = np.abs(q)[:, _FACE_AXIS]
    face_dist = np.sqrt(np.maximum((q * q).sum(axis=1)[:, None] - on_axis ** 2, 0.0)
                        + out ** 2)

    clipped = np.any(cam[..., 2] < NEAR, axis=1)
    zsafe = np.where(cam[..., 2:3] < NEAR, NEAR, cam[..., 2:3])
    uv = (cam @ intrinsics.T)[..., :2] / zsafe                             # (K, 8, 2)
    fixed = np.ascontiguousarray(_to_fixed(uv)[:, _FACES])                 # (K, 6, 4, 2)
    rect = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
    # Image size of a face ~ focal length * metric size / distance (for detail level).
    face_w = np.stack([size[:, 1], size[:, 1], size[:, 0], size[:, 0], size[:, 1], size[:, 1]], 1)
    face_h = np.stack([size[:, 2]] * 4 + [size[:, 0]] * 2, 1)
    inv_d = 1.0 / np.maximum(face_dist, NEAR)
    face_px = np.stack([intrinsics[0, 0] * face_w * inv_d, intrinsics[1, 1] * face_h * inv_d], -1)

    clip_polys = {}
    for i in np.nonzero(clipped)[0].tolist():
        polys, lo, hi = [], np.full(2, np.inf), np.full(2, -np.inf)
        for f in range(6):
            poly = _clip_near(cam[i, _FACES[f]])
            if poly is None:
                continue
            puv = _project(poly, intrinsics)
            lo, hi = np.minimum(lo, puv.min(axis=0)), np.maximum(hi, puv.max(axis=0))
            polys.append((f, _to_fixed(puv)))
        clip_polys[i] = polys
        rect[i] = np.concatenate([lo, hi]) if polys else (0, 0, -1, -1)
    return _View(idx, cam, front, clipped, fixed, clip_polys, rect, face_dist, face_px,
                 dmin, dmax)


def _paint_order(parts: Parts, view: _View, cam_pos: np.ndarray) -> list[int]:
    """Draw order (indices into the view, far to near) such that of any two parts whose image
    rectangles overlap, the occluded one is drawn first.

    Parts only rotate about z, so two disjoint boxes are separated by a plane parallel to one of
    their faces (2-D separating axis theorem on the footprints, plus the z axis). The part on
    the camera's side of that plane is in front. Intersecting parts (e.g. the parts of one
    object) fall back to distance of their centres. Constraints become a topological sort,
    preferring far-to-near by distance when unconstrained."""
    k = len(view.idx)
    depth = np.linalg.norm(parts.center[view.idx] - cam_pos, axis=1)
    base = np.argsort(-depth, kind="stable")
    if k < 2:
        return base.tolist()
    r = view.rect
    ov = ((r[:, None, 0] <= r[None, :, 2]) & (r[None, :, 0] <= r[:, None, 2])
          & (r[:, None, 1] <= r[None, :, 3]) & (r[None, :, 1] <= r[:, None, 3]))
    # If every point of one part is farther than every point of the other, it cannot hide
    # it and the distance order already draws it first: only the rest needs the exact test.
    ov &= (view.dmin[:, None] < view.dmax[None, :]) & (view.dmin[None, :] < view.dmax[:, None])
    i, j = np.nonzero(np.triu(ov, 1))
    if len(i) == 0:
        return base.tolist()

    ctr = parts.center[view.idx]
    hs = parts.size[view.idx] * 0.5
    yaw = parts.yaw[view.idx]
    ex = np.stack([np.cos(yaw), np.sin(yaw)], -1)              # (K, 2) length axis
    ey = np.stack([-ex[:, 1], ex[:, 0]], -1)                    # (K, 2) width axis
    n = np.stack([ex[i], ey[i], ex[j], ey[j]], axis=1)          # (P, 4, 2) candidate axes

    def interval(b):
        mid = np.einsum("pa,pna->pn", ctr[b, :2], n)
        rad = (hs[b, 0:1] * np.abs(np.einsum("pa,pna->pn", ex[b], n))
               + hs[b, 1:2] * np.abs(np.einsum("pa,pna->pn", ey[b], n)))
        lo = np.concatenate([mid - rad, (ctr[b, 2] - hs[b, 2])[:, None]], axis=1)
        hi = np.concatenate([mid + rad, (ctr[b, 2] + hs[b, 2])[:, None]], axis=1)
        return lo, hi

    a_lo, a_hi = interval(i)
    b_lo, b_hi = interval(j)
    cproj = np.concatenate([np.einsum("a,pna->pn", cam_pos[:2], n),
                            np.full((len(i), 1), cam_pos[2])], axis=1)
    eps = 1e-6
    sep_pos = a_hi <= b_lo + eps          # j lies on the + side of i
    sep_neg = b_hi <= a_lo + eps          # j lies on the - side of i
    j_front = np.where(sep_pos, cproj > a_hi, cproj < a_lo)
    has = sep_pos | sep_neg
    first = np.argmax(has, axis=1)
    rows = np.arange(len(i))
    jf = np.where(has.any(axis=1), j_front[rows, first], depth[j] < depth[i])
    src = np.where(jf, i, j)              # drawn first (occluded)
    dst = np.where(jf, j, i)

    pos = np.empty(k, dtype=np.int64)
    pos[base] = np.arange(k)
    if np.all(pos[src] < pos[dst]):
        return base.tolist()

    # Kahn's algorithm, always taking the farthest part among those free to be drawn.
    order_e = np.argsort(src, kind="stable")
    dst_sorted = dst[order_e].tolist()
    starts = np.searchsorted(src[order_e], np.arange(k + 1)).tolist()
    indeg = np.bincount(dst, minlength=k).tolist()
    prio = pos.tolist()
    heap = [(prio[v], v) for v in range(k) if indeg[v] == 0]
    heapq.heapify(heap)
    done = [False] * k
    out: list[int] = []
    while len(out) < k:
        if not heap:
            # A cycle (intersecting parts): break it at the farthest remaining part.
            v = min((p, v) for v, p in enumerate(prio) if not done[v])[1]
            indeg[v] = 0
            heap.append((prio[v], v))
        _, v = heapq.heappop(heap)
        if done[v]:
            continue
        done[v] = True
        out.append(v)
        for w in dst_sorted[starts[v]:starts[v + 1]]:
            indeg[w] -= 1
            if indeg[w] == 0 and not done[w]:
                heapq.heappush(heap, (prio[w], w))
    return out


# --------------------------------------------------------------------------------------------
# Appearance
# --------------------------------------------------------------------------------------------
def _face_colors(parts: Parts, view: _View, lighting: Lighting) -> np.ndarray:
    """(K, 6, 3) display colours of every face: part colour, lit by sun and sky, hazed by
    distance, graded."""
    idx = view.idx
    k = len(idx)
    c, s = np.cos(parts.yaw[idx]), np.sin(parts.yaw[idx])
    sun = lighting.sun_direction
    # Normal . sun per face (+x, -x, +y, -y, bottom, top), from the yaw only.
    ns_x = c * sun[0] + s * sun[1]
    ns_y = -s * sun[0] + c * sun[1]
    nsun = np.stack([ns_x, -ns_x, ns_y, -ns_y, np.full(k, -sun[2]), np.full(k, sun[2])], -1)
    nz = np.array([0.0, 0.0, 0.0, 0.0, -1.0, 1.0])
    shade = (lighting.ambient * (0.72 + 0.28 * nz)[None, :]
             + lighting.sun_strength * np.maximum(nsun, 0.0))              # (K, 6)
    base = parts.color[idx].astype(np.float64)
    mat = parts.material[idx]
    col = base[:, None, :] * shade[..., None]
    # Glass reflects the sky: more so on faces looking up, with little diffuse colour.
    glass = mat == _M["glass"]
    if glass.any():
        refl = np.array([0.35, 0.35, 0.35, 0.35, 0.1, 0.6])[None, :, None]
        sky = np.asarray(lighting.sky_horizon)[None, None, :] * 0.8
        col[glass] = col[glass] * (1.0 - refl) + sky * refl
    haze = 1.0 - np.exp(-view.face_dist / lighting.haze_distance)
    col = col * (1.0 - haze[..., None]) + np.asarray(lighting.sky_horizon) * haze[..., None]
    return _grade(col, lighting)


# Material details as rectangles in face coordinates (a0, a1, b0, b1) (see _FACES), with a
# colour = face colour * multiplier + offset (offset for lamps, which are their own colour).
def _template(rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([r[0] for r in rows], dtype=np.float64),
            np.array([r[1] for r in rows], dtype=np.float64),
            np.array([r[2] for r in rows], dtype=np.float64))


_DARK = (0.45, 0.45, 0.45)
_NONE = (0.0, 0.0, 0.0)
_T_VEHICLE_SIDE = [((0.0, 1.0, 0.0, 0.18), _DARK, _NONE)]             # sill / bumper shadow
_T_VEHICLE_FRONT = _template(_T_VEHICLE_SIDE + [
    ((0.06, 0.24, 0.55, 0.78), _NONE, (235.0, 235.0, 220.0)),          # headlights
    ((0.76, 0.94, 0.55, 0.78), _NONE, (235.0, 235.0, 220.0)),
    ((0.35, 0.65, 0.3, 0.6), (0.35, 0.35, 0.35), _NONE)])              # grille
_T_VEHICLE_REAR = _template(_T_VEHICLE_SIDE + [
    ((0.05, 0.2, 0.6, 0.8), _NONE, (170.0, 20.0, 20.0)),               # tail lights
    ((0.8, 0.95, 0.6, 0.8), _NONE, (170.0, 20.0, 20.0)),
    ((0.4, 0.6, 0.3, 0.45), _NONE, (210.0, 210.0, 200.0))])            # plate
_T_VEHICLE_SIDE = _template(_T_VEHICLE_SIDE)
_T_TIRE = _template([((0.3, 0.7, 0.3, 0.7), (2.5, 2.5, 2.5), (30.0, 30.0, 30.0))])  # rim
_T_CONE = _template([((0.0, 1.0, 0.0, 0.07), (0.25, 0.25, 0.25), _NONE),             # base
                     ((0.0, 1.0, 0.42, 0.57), (0.4, 0.4, 0.4), (150.0, 150.0, 150.0)),
                     ((0.0, 1.0, 0.7, 0.82), (0.4, 0.4, 0.4), (150.0, 150.0, 150.0))])
_T_VEGETATION = _template([((0.1, 0.4, 0.5, 0.85), (0.75, 0.75, 0.75), _NONE),
                           ((0.55, 0.9, 0.25, 0.6), (1.15, 1.15, 1.15), _NONE)])
_MAX_FLOORS, _MAX_BAYS, _MAX_STRIPES = 12, 16, 6


def _template_table():
    """The fixed-count templates stacked into padded arrays (T, n, ...) with a validity mask,
    and (materials, 6) the template index of each (material, face), -1 for none; vertical
    faces only (0-3: front, rear, left, right)."""
    templates = (_T_VEHICLE_FRONT, _T_VEHICLE_REAR, _T_VEHICLE_SIDE, _T_TIRE, _T_CONE,
                 _T_VEGETATION)
    n = max(len(t[0]) for t in templates)
    params, valid = np.zeros((len(templates), n, 4)), np.zeros((len(templates), n), dtype=bool)
    mul, add = np.zeros((len(templates), n, 3)), np.zeros((len(templates), n, 3))
    for i, (p, m, a) in enumerate(templates):
        params[i, :len(p)], mul[i, :len(p)], add[i, :len(p)], valid[i, :len(p)] = p, m, a, True
    face = np.full((len(MATERIAL_NAMES), 6), -1, dtype=np.int64)
    face[_M["vehicle"], :4] = (0, 1, 2, 2)
    face[_M["tire"], 2:4] = 3                                   # the rims show on the sides
    face[_M["traffic_cone"], :4] = 4
    face[_M["vegetation"], :4] = 5
    return (params, valid, mul, add), face


_FIXED_TEMPLATES, _FACE_TEMPLATE = _template_table()


def _grid_details(count_a, count_b, face_idx, kind):
    """Variable-count details for faces (F,): building window bands and pillars, barrier
    stripes. Returns params (F, n, 4), valid (F, n), multiplier (F, n, 3), offset (F, n, 3)."""
    f = len(face_idx)
    if kind == "building":
        floors, bays = count_b, count_a
        j = np.arange(_MAX_FLOORS)[None, :]
        band = np.zeros((f, _MAX_FLOORS, 4))
        band[..., 1] = 1.0
        band[..., 2] = (j + 0.3) / floors[:, None]
        band[..., 3] = (j + 0.78) / floors[:, None]
        jc = np.arange(_MAX_BAYS + 1)[None, :]
        pillar = np.zeros((f, _MAX_BAYS + 1, 4))
        pillar[..., 0] = (jc - 0.12) / bays[:, None]
        pillar[..., 1] = (jc + 0.12) / bays[:, None]
        pillar[..., 3] = 1.0
        params = np.concatenate([band, pillar], axis=1)
        valid = np.concatenate([j < floors[:, None], jc <= bays[:, None]], axis=1)
        mul = np.concatenate([np.broadcast_to([0.35, 0.42, 0.5], (f, _MAX_FLOORS, 3)),
                              np.ones((f, _MAX_BAYS + 1, 3))], axis=1)
        add = np.concatenate([np.full((f, _MAX_FLOORS, 3), 10.0),
                              np.zeros((f, _MAX_BAYS + 1, 3))], axis=1)
        return params, valid, mul, add
    # barrier: alternate stripes along its length
    n = count_a
    st = 2 * np.arange(_MAX_STRIPES)[None, :] + 1
    params = np.zeros((f, _MAX_STRIPES, 4))
    params[..., 0] = st / n[:, None]
    params[..., 1] = (st + 1) / n[:, None]
    params[..., 2], params[..., 3] = 0.1, 0.9
    valid = st < n[:, None]
    return (params, valid, np.full((f, _MAX_STRIPES, 3), 0.25), np.zeros((f, _MAX_STRIPES, 3)))


_ATMOS_CACHE: dict = {}


def _atmosphere(rot_gc: np.ndarray, cam_z: float, intrinsics: np.ndarray, width: int,
                height: int, lighting: Lighting):
    """Sky and haze of one view.

    Returns (colour, haze, clear, v0): colour (H, W, 4) uint8 RGBA (alpha 255), a fresh array,
    of the sky above the horizon and of the haze below it; v0 the first image row that can see
    the ground (height if none); the weights of the haze and of the ground from row v0 as
    uint8 in 1/255 steps that sum to exactly 255: haze (H - v0, W, 4) (alpha 0), clear (H - v0, W).
    Weights in uint8 let the ground be blended by two saturating multiplies and an add, ~3x
    cheaper than a float blend, within one grey level of it.

    Everything but the sun's halo depends only on the elevation of each pixel ray, i.e. on the
    camera's tilt and height, not its heading, so it is cached: cameras on a vehicle driving on
    flat ground hit the cache every frame."""
    key = (intrinsics.tobytes(), width, height, tuple(np.round(rot_gc[2], 4)), round(cam_z, 3),
           lighting)
    entry = _ATMOS_CACHE.get(key)
    rays_cam = _coarse_rays(intrinsics, width, height)
    if entry is None:
        rays = rays_cam @ rot_gc.T                                    # (Hc, Wc, 3) global
        e = rays[..., 2] / np.linalg.norm(rays, axis=-1)              # sin(elevation)
        down = e < -1e-6
        # Distance along the ray to the ground, then exponential haze.
        dist = np.where(down, max(cam_z, 0.05) / np.maximum(-e, 1e-6), np.inf)
        haze = np.where(down, 1.0 - np.exp(-dist / lighting.haze_distance), 1.0)
        zen, hor = np.asarray(lighting.sky_zenith), np.asarray(lighting.sky_horizon)
        w = np.clip(e / 0.6, 0.0, 1.0)[..., None] ** 0.6
        sky = hor * (1.0 - w) + zen * w
        rows = np.nonzero(down.any(axis=1))[0]
        # The coarse grid may miss the horizon by up to one grid cell.
        v0 = height if len(rows) == 0 else int(max(0, np.floor((rows[0] - 1) * height / down.shape[0])))
        haze_u8 = np.rint(255.0 * cv2.resize(haze.astype(np.float32), (width, height),
                                             interpolation=cv2.INTER_LINEAR)[v0:]).astype(np.uint8)
        haze_rgba = cv2.merge([haze_u8, haze_u8, haze_u8, np.zeros_like(haze_u8)])
        glow_mask = (e > -0.05)[..., None]
        static = None if lighting.sun_glow > 0.01 else _sky_image(sky, lighting, width, height)
        entry = (sky, glow_mask, haze_rgba, 255 - haze_u8, v0, static)
        if len(_ATMOS_CACHE) >= 24:
            _ATMOS_CACHE.pop(next(iter(_ATMOS_CACHE)))
        _ATMOS_CACHE[key] = entry
    sky, glow_mask, haze_rgba, clear_u8, v0, static = entry
    if static is not None and lighting.sun_glow <= 0.01:
        return static.copy(), haze_rgba, clear_u8, v0
    # Halo around the sun: a tight core and a wide veil.
    sun_cam = rot_gc.T @ lighting.sun_direction
    norms = _RAY_NORM_CACHE.get(id(rays_cam))
    if norms is None or norms[0] is not rays_cam:
        norms = (rays_cam, np.linalg.norm(rays_cam, axis=-1))
        if len(_RAY_NORM_CACHE) > 16:
            _RAY_NORM_CACHE.clear()
        _RAY_NORM_CACHE[id(rays_cam)] = norms
    cos_sun = (rays_cam @ sun_cam) / norms[1]
    glow = lighting.sun_glow * (np.exp((cos_sun - 1.0) * 40.0) + 0.3 * np.exp((cos_sun - 1.0) * 4.0))
    if glow.max() < 0.5 / 255.0:
        # Facing away from the sun: the halo would not change a single 8-bit value.
        if static is None:
            static = _sky_image(sky, lighting, width, height)
            _ATMOS_CACHE[key] = entry[:5] + (static,)
        return static.copy(), haze_rgba, clear_u8, v0
    lit = sky + (255.0 - sky) * np.clip(glow, 0.0, 1.0)[..., None] * glow_mask
    return _sky_image(lit, lighting, width, height), haze_rgba, clear_u8, v0


def _sky_image(coarse: np.ndarray, lighting: Lighting, width: int, height: int) -> np.ndarray:
    """Coarse (Hc, Wc, 3) sky radiance -> graded (H, W, 4) uint8 RGBA image, alpha 255."""
    rgba = np.full(coarse.shape[:2] + (4,), 255, dtype=np.uint8)
    rgba[..., :3] = _grade(coarse, lighting)
    return cv2.resize(rgba, (width, height), interpolation=cv2.INTER_LINEAR)


def _shadow_polygons(parts: Parts, corners: np.ndarray, lighting: Lighting) -> np.ndarray:
    """(M, 8, 2) global xy of each part's sun shadow on z = 0, a convex polygon (some vertices
    repeated).

    The shadow of a box is the Minkowski sum of its footprint (shifted by the shadow offset of
    its bottom) and the segment the shadow offset grows by up to its top. Walking the footprint
    counter-clockwise, each corner p_i emits p_i + v * [edge i-1 faces v], p_i + v * [edge i
    faces v]: the convex hull without a per-part hull call. The stretch is capped as if the sun
    were at least 20 deg high, so dusk shadows stay a plausible length."""
    sun = lighting.sun_direction
    tan_el = max(np.tan(lighting.sun_elevation), np.tan(0.35))
    d = -sun[:2] / max(np.linalg.norm(sun[:2]), 1e-9) / tan_el        # shadow offset per m height
    foot = corners[:, :4, :2]                                          # (M, 4, 2) CCW from above
    zb = parts.center[:, 2] - 0.5 * parts.size[:, 2]
    base = foot + (np.maximum(zb, 0.0)[:, None, None] * d)
    v = (parts.size[:, 2] + np.minimum(zb, 0.0))[:, None] * d          # (M, 2)
    c, s = np.cos(parts.yaw), np.sin(parts.yaw)
    # Outward normals of the footprint edges 0->1, 1->2, 2->3, 3->0: +y, -x, -y, +x (local).
    nd_x, nd_y = c * d[0] + s * d[1], -s * d[0] + c * d[1]
    faces = np.stack([nd_y, -nd_x, -nd_y, nd_x], axis=1) > 0          # (M, 4) edge faces v
    prev = np.roll(faces, 1, axis=1)
    first = base + prev[..., None] * v[:, None, :]
    second = base + faces[..., None] * v[:, None, :]
    return np.stack([first, second], axis=2).reshape(-1, 8, 2)


def _fill_ground_polys(mask: np.ndarray, polys_xy: np.ndarray, value: int, rot: np.ndarray,
                       trans: np.ndarray, k_img: np.ndarray, k_full: np.ndarray, width: int,
                       height: int, max_distance: float) -> bool:
    """Fill convex ground polygons (N, n, 2) global xy at z = 0 into ``mask`` (whose pixel grid
    is given by intrinsics ``k_img``); culling uses the full-resolution view ``k_full``."""
    if len(polys_xy) == 0:
        return False
    pts = np.concatenate([polys_xy, np.zeros(polys_xy.shape[:2] + (1,))], axis=-1)
    cam = pts @ rot.T + trans
    z = cam[..., 2]
    sel = (z.max(axis=1) > NEAR) & (z.min(axis=1) < max_distance)
    sel &= ~_frustum_outside(cam, k_full, width, height)
    if not sel.any():
        return False
    cam = cam[sel]
    whole = cam[..., 2].min(axis=1) >= NEAR
    zs = np.maximum(cam[..., 2:3], NEAR)
    uv = (cam @ k_img.T)[..., :2] / zs
    # Shadows under a pixel across are invisible: skip their fills.
    ext = uv.max(axis=1) - uv.min(axis=1)
    big = (ext[:, 0] >= 1.0) | (ext[:, 1] >= 1.0)
    fixed = _to_fixed(uv)
    for i in np.nonzero(whole & big)[0].tolist():
        cv2.fillConvexPoly(mask, fixed[i], (value,), cv2.LINE_8, _SHIFT)
    for i in np.nonzero(~whole)[0].tolist():
        poly = _clip_near(cam[i])
        if poly is not None:
            cv2.fillConvexPoly(mask, _to_fixed(_project(poly, k_img)), (value,), cv2.LINE_8, _SHIFT)
    return True


def _shadow_mask(parts: Parts, corners: np.ndarray, rot: np.ndarray, trans: np.ndarray, intrinsics: np.ndarray,
                 width: int, height: int, lighting: Lighting, max_distance: float) -> np.ndarray | None:
    """(H, W) uint8 ground darkening (255 = lit) from sun shadows of all parts and contact
    shadows (sky light blocked under an object) of annotated objects; drawn at half resolution
    and interpolated up, which softens the edges for free. Parts out of view can still cast a
    shadow into it, so culling is on the shadow polygons, not on the parts."""
    if len(parts) == 0:
        return None
    sun = lighting.sun_direction
    sunny = lighting.sun_strength > 0.15 and sun[2] > 0.02
    # Cull casters whose shadow cannot reach the view: a sphere around footprint and shadow.
    foot_r = 0.5 * np.hypot(parts.size[:, 0], parts.size[:, 1])
    centre = parts.center.copy()
    centre[:, 2] = 0.0
    radius = foot_r * 1.1
    if sunny:
        tan_el = max(np.tan(lighting.sun_elevation), np.tan(0.35))
        reach = (parts.center[:, 2] + 0.5 * parts.size[:, 2]) / tan_el
        centre[:, :2] -= (0.5 * reach)[:, None] * sun[:2] / max(np.linalg.norm(sun[:2]), 1e-9)
        radius = radius + 0.5 * reach
    sel = _spheres_visible(centre, radius, rot, trans, intrinsics, width, height, max_distance)
    if not sel.any():
        return None
    parts, corners = parts.select(sel), corners[sel]
    hw, hh = (width + 1) // 2, (height + 1) // 2
    mask = np.full((hh, hw), 255, dtype=np.uint8)
    # Half-resolution pixel grid: centre of half-pixel j is at full-resolution 2 j + 0.5.
    k_half = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]]) @ intrinsics
    drawn = False
    if sunny:
        dark = int(255 * (1.0 - 0.6 * lighting.sun_strength
                          / (lighting.sun_strength + lighting.ambient * 0.6)))
        drawn |= _fill_ground_polys(mask, _shadow_polygons(parts, corners, lighting), dark, rot, trans,
                                    k_half, intrinsics, width, height, max_distance)
    # Under a sun the sun shadow already covers each footprint; contact shadows are for
    # diffuse light.
    obj = (parts.instance >= 0) & (parts.center[:, 2] - parts.size[:, 2] * 0.5 < 0.5)
    if not sunny and obj.any():
        foot = corners[obj][:, :4, :2]
        ctr = parts.center[obj][:, None, :2]
        foot = ctr + (foot - ctr) * 1.1
        drawn |= _fill_ground_polys(mask, foot, 140, rot, trans, k_half, intrinsics, width,
                                    height, max_distance)
    if not drawn:
        return None
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)


def _inv3(m: np.ndarray) -> np.ndarray:
    """Inverse of a 3 x 3 matrix by cofactors (np.linalg.inv goes through LAPACK, whose
    per-call overhead is large next to this whole renderer's budget)."""
    c = np.array([
        [m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1], m[0, 2] * m[2, 1] - m[0, 1] * m[2, 2],
         m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]],
        [m[1, 2] * m[2, 0] - m[1, 0] * m[2, 2], m[0, 0] * m[2, 2] - m[0, 2] * m[2, 0],
         m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]],
        [m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0], m[0, 1] * m[2, 0] - m[0, 0] * m[2, 1],
         m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]]])
    return c / (m[0, 0] * c[0, 0] + m[0, 1] * c[1, 0] + m[0, 2] * c[2, 0])


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def render_camera(snapshot: Snapshot, global_T_camera: np.ndarray, intrinsics: np.ndarray,
                  width: int, height: int, rng: np.random.Generator, lighting: Lighting,
                  model: CameraModel = CameraModel(), instance_ids: bool = True,
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one camera image.

    snapshot:        the world at the image's timestamp
    global_T_camera: (4, 4) float, camera frame (x right, y down, z forward) -> global, metres
    intrinsics:      (3, 3) pinhole matrix, pixels
    width, height:   image size, pixels
    rng:             per-image randomness (sensor noise pattern)
    instance_ids:    also return the instance buffer (the writer needs it for keyframes only)
    Returns (H, W, 3) uint8 RGB image and (H, W) int32 instance buffer (Parts.instance of the
    visible surface at each pixel, -1 for ground, sky and static world), None if not asked for.
    """
    t_gc = np.asarray(global_T_camera, dtype=np.float64)
    k_mat = np.asarray(intrinsics, dtype=np.float64)
    rot, trans = _rigid_inverse(t_gc)
    cam_pos = t_gc[:3, 3]
    parts = snapshot.parts
    corners = parts.corners()

    # Background: sky, ground texture, shadows, haze.
    colour, haze, clear, v0 = _atmosphere(t_gc[:3, :3], float(cam_pos[2]), k_mat, width, height,
                                          lighting)
    image = colour
    if v0 < height and cam_pos[2] > 0:
        tex, r0, c0 = _ground_texture(snapshot.ground, cam_pos[:2], lighting)
        g = snapshot.ground
        res = g.resolution
        tex_to_global = np.array([[res, 0, g.x0 + (c0 + 0.5) * res],
                                  [0, res, g.y0 + (r0 + 0.5) * res], [0, 0, 1.0]])
        ground_to_image = k_mat @ np.column_stack([rot[:, 0], rot[:, 1], trans])
        image_to_tex = _inv3(ground_to_image @ tex_to_global)
        image_to_tex = image_to_tex @ np.array([[1.0, 0, 0], [0, 1.0, v0], [0, 0, 1.0]])
        # Outside the raster the ground is grass (GroundMap contract).
        grass = _GRASS_CACHE.get(lighting)
        if grass is None:
            grass = tuple(float(x) for x in _grade(CAMERA_COLOR[_M["grass"]] * (
                lighting.ambient + lighting.sun_strength * max(0.0, lighting.sun_direction[2])),
                lighting)) + (255.0,)
            if len(_GRASS_CACHE) > 16:
                _GRASS_CACHE.clear()
            _GRASS_CACHE[lighting] = grass
        ground_img = cv2.warpPerspective(tex, image_to_tex, (width, height - v0),
                                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=grass)
        # ground * clear * shadow + haze colour * haze, all in uint8; alpha stays 255.
        weight = clear
        if model.shadows and len(parts):
            mask = _shadow_mask(parts, corners, rot, trans, k_mat, width, height, lighting,
                                model.max_distance)
            if mask is not None:
                weight = cv2.multiply(mask[v0:], clear, scale=1.0 / 255.0)
        image[v0:] = cv2.add(
            cv2.multiply(ground_img, cv2.cvtColor(weight, cv2.COLOR_GRAY2RGBA), scale=1.0 / 255.0),
            cv2.multiply(colour[v0:], haze, scale=1.0 / 255.0))

    ids = None
    if len(parts):
        view = _prepare(parts, corners, t_gc, k_mat, width, height, model.max_distance)
        if len(view.idx):
            # Instances in view get a local id 0..254 in the alpha channel (255: none), so that
            # one fill draws colour and id; cv2.LUT maps local ids back to instances.
            inst = parts.instance[view.idx]
            uniq = np.unique(inst[inst >= 0])
            if len(uniq) <= 255:
                local = np.where(inst >= 0, np.searchsorted(uniq, inst), 255).astype(np.float64)
                _draw_parts(image, None, parts, view, local, cam_pos, k_mat, lighting, model)
                if instance_ids:
                    lut = np.full((256, 1), -1, dtype=np.int32)
                    lut[: len(uniq), 0] = uniq
                    ids = cv2.LUT(cv2.extractChannel(image, 3), lut)
            else:
                if instance_ids:
                    ids = np.full((height, width), -1, dtype=np.int32)
                _draw_parts(image, ids, parts, view, np.full(len(inst), 255.0), cam_pos, k_mat,
                            lighting, model)
    if ids is None and instance_ids:
        ids = np.full((height, width), -1, dtype=np.int32)
    image = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)

    if model.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (3, 3), model.blur_sigma)
    if model.noise_sigma > 0:
        pos, neg = _noise_tile(width, height, model.noise_sigma)
        # Independent windows for the positive and negative halves: their sum is the noise.
        oy, ox, py, px = (int(x) for x in rng.integers(0, 98, size=4))
        image = cv2.subtract(cv2.add(image, pos[oy:oy + height, ox:ox + width]),
                             neg[py:py + height, px:px + width])
    return image, ids


def _detail_quads(parts: Parts, view: _View, colors: np.ndarray, k_mat: np.ndarray,
                  lighting: Lighting, model: CameraModel):
    """Material details of all faces big enough in the image to show them, projected in one
    batch. Returns (quads (Q, 4, 2) int32 fixed point, colours (Q, 3) float, owner (Q,) = k * 6
    + face), quads of one face contiguous, or None."""
    mats = parts.material[view.idx]
    size = parts.size[view.idx]
    cand = (view.face_px[..., 1] >= model.detail_min_px) & view.front & ~view.clipped[:, None]
    cand[:, 4:] = False                                         # only vertical faces
    groups = []                                                 # (face ids, params, valid, mul, add)
    tpl = _FACE_TEMPLATE[mats]                                  # (K, 6) fixed template, -1 none
    kk, ff = np.nonzero(cand & (tpl >= 0))
    if len(kk):
        t = tpl[kk, ff]
        groups.append((kk * 6 + ff,) + tuple(a[t] for a in _FIXED_TEMPLATES))
    face_w = np.stack([size[:, 1], size[:, 1], size[:, 0], size[:, 0]], 1)
    for kind in ("building", "barrier"):
        kk, ff = np.nonzero(cand & (mats == _M[kind])[:, None])
        if not len(kk):
            continue
        w, h = face_w[kk, ff], size[kk, 2]
        px_w, px_h = view.face_px[kk, ff, 0], view.face_px[kk, ff, 1]
        if kind == "building":
            # ~3.5 m bays and ~3.3 m floors, fewer when they would be under ~5 px apart.
            bays = np.clip(np.minimum(np.rint(w / 3.5), px_w // 5), 1, _MAX_BAYS)
            floors = np.clip(np.minimum(np.rint(h / 3.3), px_h // 5), 1, _MAX_FLOORS)
        else:
            keep = w > 0.6
            kk, ff, w, px_w = kk[keep], ff[keep], w[keep], px_w[keep]
            bays = np.clip(np.minimum(np.rint(w / 0.45), px_w // 3), 2, 2 * _MAX_STRIPES)
            floors = None
        if len(kk):
            groups.append((kk * 6 + ff,) + _grid_details(bays, floors, kk, kind))
    if not groups:
        return None
    owner = np.concatenate([np.repeat(g[0], g[2].sum(axis=1)) for g in groups])
    params = np.concatenate([g[1][g[2]] for g in groups])
    mul = np.concatenate([g[3][g[2]] for g in groups])
    add = np.concatenate([g[4][g[2]] for g in groups])
    if not len(owner):
        return None
    # Quads of one face contiguous, in template order (the draw loop slices by face).
    srt = np.argsort(owner, kind="stable")
    owner, params, mul, add = owner[srt], params[srt], mul[srt], add[srt]
    k_of, f_of = owner // 6, owner % 6
    face = view.cam[k_of[:, None], _FACES[f_of]]                       # (Q, 4, 3)
    v0 = face[:, 0:1]
    a = params[:, [0, 1, 1, 0]][..., None]
    b = params[:, [2, 2, 3, 3]][..., None]
    pts = v0 + a * (face[:, 1:2] - v0) + b * (face[:, 3:4] - v0)
    quads = _to_fixed(_project(pts, k_mat))
    # Lamps keep their own colour but fade into the haze like everything else.
    clear = np.exp(-view.face_dist[k_of, f_of] / lighting.haze_distance)[:, None]
    haze_col = _grade(np.asarray(lighting.sky_horizon), lighting)
    col = colors[k_of, f_of] * mul + add * clear + haze_col * (1.0 - clear) * (add > 50.0)
    return quads, np.clip(col, 0.0, 255.0), owner


def _draw_parts(image: np.ndarray, ids: np.ndarray | None, parts: Parts, view: _View,
                local_id: np.ndarray, cam_pos: np.ndarray, k_mat: np.ndarray,
                lighting: Lighting, model: CameraModel) -> None:
    """Painter's algorithm into an RGBA ``image`` whose alpha channel receives ``local_id``
    (K,) of each part (one fill per polygon writes colour and id together); ``ids`` is drawn
    separately only when given (more instances in view than the alpha channel can hold)."""
    order = _paint_order(parts, view, cam_pos)
    colors = _face_colors(parts, view, lighting)
    k = len(view.idx)
    rgba = np.concatenate([colors, np.broadcast_to(local_id[:, None, None], (k, 6, 1))], axis=-1)
    colors_l = rgba.tolist()
    inst = parts.instance[view.idx].tolist()
    front = view.front.tolist()
    clipped = view.clipped.tolist()
    fixed = view.fixed
    det = _detail_quads(parts, view, colors, k_mat, lighting, model) if model.detail else None
    if det is not None:
        quads, qcol, owner = det
        qcol_l = np.concatenate([qcol, local_id[owner // 6][:, None]], axis=1).tolist()
        bounds = np.searchsorted(owner, np.arange(k * 6 + 1)).tolist()
    else:
        bounds = [0] * (k * 6 + 1)
    fill = cv2.fillConvexPoly
    line8 = cv2.LINE_8
    for p in order:
        iv = (inst[p],)
        fk = front[p]
        if clipped[p]:
            # Back faces first: where the near plane cuts the part, they are what is seen.
            for f, poly in sorted(view.clip_polys[p], key=lambda fp: fk[fp[0]]):
                col = colors_l[p][f] if fk[f] else [c * 0.5 for c in colors_l[p][f][:3]] + [colors_l[p][f][3]]
                fill(image, poly, col, line8, _SHIFT)
                if ids is not None:
                    fill(ids, poly, iv, line8, _SHIFT)
            continue
        ck = colors_l[p]
        fxk = fixed[p]
        for f in range(6):
            if fk[f]:
                poly = fxk[f]
                fill(image, poly, ck[f], line8, _SHIFT)
                if ids is not None:
                    fill(ids, poly, iv, line8, _SHIFT)
                b0, b1 = bounds[p * 6 + f], bounds[p * 6 + f + 1]
                for q in range(b0, b1):
                    fill(image, quads[q], qcol_l[q], line8, _SHIFT)


def instance_pixel_counts(snapshot: Snapshot, global_T_camera: np.ndarray, intrinsics: np.ndarray,
                          width: int, height: int,
                          id_buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per instance id 0..max(Parts.instance): (visible, full) int64 pixel counts.

    visible: pixels of the instance in ``id_buffer`` (from :func:`render_camera`).
    full:    pixels its silhouette (union of its parts' near-clipped faces, clipped to the image)
             covers with nothing in front; rasterized exactly like the render, so an unoccluded
             instance has full == visible.
    """
    parts = snapshot.parts
    n = int(parts.instance.max()) + 1 if len(parts) else 0
    n = max(n, 0)
    ids = id_buffer[id_buffer >= 0]
    visible = np.bincount(ids, minlength=n)[:n].astype(np.int64)
    full = np.zeros(n, dtype=np.int64)
    if n == 0:
        return visible, full
    # No distance cut-off here: a part too far for the render to draw is simply not visible.
    view = _prepare(parts, parts.corners(), np.asarray(global_T_camera, dtype=np.float64),
                    np.asarray(intrinsics, dtype=np.float64), width, height)
    inst = parts.instance[view.idx]
    mask = np.zeros((height, width), dtype=np.uint8)
    for obj in np.unique(inst[inst >= 0]).tolist():
        ks = np.nonzero(inst == obj)[0]
        r = view.rect[ks]
        x0 = int(np.clip(np.floor(r[:, 0].min()) - 1, 0, width))
        y0 = int(np.clip(np.floor(r[:, 1].min()) - 1, 0, height))
        x1 = int(np.clip(np.ceil(r[:, 2].max()) + 2, 0, width))
        y1 = int(np.clip(np.ceil(r[:, 3].max()) + 2, 0, height))
        if x1 <= x0 or y1 <= y0:
            continue
        for k in ks.tolist():
            if view.clipped[k]:
                for _, poly in view.clip_polys[k]:
                    cv2.fillConvexPoly(mask, poly, (1,), cv2.LINE_8, _SHIFT)
            else:
                for f in np.nonzero(view.front[k])[0].tolist():
                    cv2.fillConvexPoly(mask, view.fixed[k, f], (1,), cv2.LINE_8, _SHIFT)
        roi = mask[y0:y1, x0:x1]
        full[obj] = cv2.countNonZero(roi)
        roi[:] = 0
    return visible, full
