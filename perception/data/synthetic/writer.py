"""One synthetic scene -> its nuScenes records and files (the sensor timeline, the tables, the blobs).

``write_scene(job)`` builds the scenario of one scene, lays out the sensor timeline, runs every
sensor model at every sensor timestamp, writes the files under ``job.dataroot`` and returns the
scene's table records (``generate.py`` merges the scenes and writes the JSON tables).

Timeline (all times in microseconds, a realistic 2018 epoch; ``t_s`` = seconds since scene start):

- LIDAR_TOP: 20 Hz (50 ms +- ~1 ms jitter); every 10th sweep is a keyframe (2 Hz) and a sample's
  timestamp is its LiDAR keyframe's. The first keyframe is at ``_MARGIN_S`` so that the
  cameras and radars that fire just before it still lie inside the scenario's time span.
- cameras: 12 Hz, 6 captures per 0.5 s. nuScenes triggers each camera when the spinning LiDAR
  sweeps across its field of view, so every 6th capture is anchored at the LiDAR keyframe time
  plus a per-camera offset set by the camera's yaw (one LiDAR turn = 50 ms, offsets within
  +-42 ms); that capture is the camera's keyframe (we still pick "the capture nearest the LiDAR
  keyframe", which it is). No camera or radar timestamp equals a LiDAR one.
- radars: ~13 Hz each (period 1/13 s +- 1 %, own phase, +-1 ms jitter), free running; the keyframe
  of a radar is its sweep nearest the LiDAR keyframe.
- Every channel starts and ends at a keyframe (as in the nuScenes tables): captures before the
  first and after the last keyframe are dropped.
- Sweeps (non-keyframes) carry the sample token of the NEXT keyframe of their channel, as in
  nuScenes: ``NuScenes.get_boxes`` interpolates a sweep's boxes between that sample and its prev.

Records: each sample_data has its own ego_pose (same token, as in nuScenes) at its own timestamp;
one calibrated_sensor per (scene, channel) (per-scene calibration jitter); one log and one map per
scene. With ``sweeps=False`` only keyframe files are written but all sample_data records are kept,
exactly like a keyframe-only nuScenes download (the devkit and multi-sweep loaders then find a
record whose file is absent, as they would on the real data).

Annotations: at every sample, every present actor within ``ANNOTATION_RANGE_M`` of the ego
(horizontal distance to the ego pose of the LiDAR keyframe), zero-point boxes included, as nuScenes
does. An actor that is annotated in consecutive samples continues its instance; one that leaves
the range and comes back starts a NEW instance, which keeps nuScenes' invariants (an annotation's
prev lies in the previous sample, so ``get_boxes`` interpolation and ``box_velocity`` stay valid).

Point counts: ``num_lidar_pts`` / ``num_radar_pts`` count the very points written (LiDAR: the
keyframe sweep; radar: the sum over the 5 keyframe radar sweeps, every return, as the devkit reads
them with every filter disabled), as float32 like the files, with the box moved from global to that
sensor's frame through that sample_data's ego pose and calibration as ``NuScenes.get_sample_data``
does (vectorized: ``keyframe_counts``). Keyframe points closer than
``FACE_EPS_M`` to a face of an annotated box are dropped before writing, so no float rounding can
put a point on either side of a face and the counts equal the devkit's ``points_in_box`` exactly
(the tests check every count with the devkit on the files). Scenario parts sit >= 0.03 m inside
their box, so this only ever removes noisy ground or clutter points that landed on a face by
chance.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
from pyquaternion import Quaternion

from perception.data.poses import quaternion_to_matrix

from .rig import CAMERA_CHANNELS, LIDAR_CHANNEL, RADAR_CHANNELS, Rig, build_rig

ANNOTATION_RANGE_M = 60.0
FACE_EPS_M = 1e-6
LIDAR_HZ = 20.0
SWEEPS_PER_KEYFRAME = 10
CAMERA_PER_KEYFRAME = 6          # 12 Hz = 6 captures per 0.5 s keyframe interval
RADAR_HZ = 13.0
_MARGIN_S = 0.06                 # first keyframe after scene start; > the largest camera/radar lead
_LIDAR_TURN_US = 50_000          # one LiDAR revolution (20 Hz)

VISIBILITY_BINS = (0.4, 0.6, 0.8)   # visible share thresholds of tokens '1' | '2' | '3' | '4'

# Stream ids of the per-scene random generators (SeedSequence entropy [seed, scene_key, stream, ...]).
_STREAM_WORLD, _STREAM_RIG, _STREAM_TIMELINE, _STREAM_LOG, _STREAM_LIGHT = 0, 1, 2, 3, 4
_STREAM_SENSOR = 100


@dataclass(frozen=True)
class SceneJob:
    """Everything needed to write one scene; picklable (sent to a worker process).

    dataroot: output root (samples/, sweeps/, maps/ are created under it)
    scene_name: nuScenes scene name, e.g. "scene-0061"; with ``seed`` it fixes all randomness
    duration_s: scene length (s); image_width/height: camera resolution (px)
    actor_density: scales the scenario's number of actors; noise: scales the sensors' noise
    sweeps: write non-keyframe files; jpeg_quality: 1..100
    cover_classes: add parked / standing groups until every detection class is in view
        (WorldConfig.cover_classes; SynthConfig.cover_classes decides per scene)
    """

    dataroot: str
    scene_name: str
    seed: int = 0
    duration_s: float = 20.0
    image_width: int = 640
    image_height: int = 360
    actor_density: float = 1.0
    noise: float = 1.0
    sweeps: bool = True
    jpeg_quality: int = 90
    cover_classes: bool = False


@dataclass
class SceneResult:
    """Table records of one scene (lists of dicts, nuScenes field names) and timing/stat counters."""

    tables: dict[str, list[dict]]
    stats: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Tokens and randomness
# ------------------------------------------------------------------------------------------------
def make_token(*parts) -> str:
    """32 hex chars, a pure function of ``parts`` (deterministic across runs and processes)."""
    return hashlib.sha1("/".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:32]


def scene_key(scene_name: str) -> int:
    return zlib.crc32(scene_name.encode("utf-8"))


def scene_rng(job: SceneJob, *stream: int) -> np.random.Generator:
    """Independent generator for one purpose of one scene: depends on (seed, scene name, stream)
    only, so a scene is the same whichever process builds it and whatever else is generated."""
    return np.random.default_rng(np.random.SeedSequence([int(job.seed), scene_key(job.scene_name),
                                                         *[int(s) for s in stream]]))


# ------------------------------------------------------------------------------------------------
# The standard tables (the same in every dataset, like nuScenes' own: tokens depend on the name only)
# ------------------------------------------------------------------------------------------------
ATTRIBUTES = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an "
                        "intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent "
                       "to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)

# (name, description) in nuScenes-lidarseg index order (the category.json of v1.0 carries "index").
CATEGORIES = (
    ("noise", "Any lidar return that does not correspond to a physical object, such as dust, vapor, "
              "noise, fog, raindrops, smoke and reflections."),
    ("animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.construction_worker", "Construction worker"),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle, e.g. "
     "skateboard, segway, or scooters, on which the person typically travels in a upright position. "
     "Driver and (if applicable) rider should be included in the bounding box along with the vehicle."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.stroller", "Strollers. If a person is in the stroller, include in the annotation."),
    ("human.pedestrian.wheelchair", "Wheelchairs. If a person is in the wheelchair, include in the "
                                    "annotation."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene in order to redirect "
     "traffic. Commonly used at construction sites. This includes concrete barrier, metal barrier "
     "and water barrier. No fences."),
    ("movable_object.debris", "Movable object that is left on the driveable surface that is too "
     "large to be driven over safely, e.g tree branch, full trash bag etc."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull. For example "
     "dolleys, wheel barrows, garbage-bins, or shopping carts."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row. "
     "It includes all the bikes parked in it and any empty slots that are intended for parking bikes."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle designed to travel at lower "
     "speeds either on road surface, sidewalks or bike paths."),
    ("vehicle.bus.bendy", "Bendy bus subcategory. Annotate each section of the bendy bus individually."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.car", "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, "
     "vans, mini-vans, SUVs and jeeps. If the vehicle is designed to carry more than 10 people use "
     "vehicle.bus. If it is primarily designed to haul cargo use vehicle.truck. "),
    ("vehicle.construction", "Vehicles primarily designed for construction. Typically very slow "
     "moving or stationary. Cranes and extremities of construction vehicles are only included in "
     "annotations if they interfere with traffic. Trucks used to haul rocks or building materials "
     "are considered vehicle.truck rather than construction vehicles."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles including police bicycles and "
                                 "motorcycles."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly "
     "(at the speed of standard cars) on the road surface. This category includes all motorcycles, "
     "vespas and scooters."),
    ("vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo including pick-ups, lorrys, trucks "
     "and semi-tractors. Trailers hauled after a semi-tractor should be labeled as vehicle.trailer"),
    ("flat.driveable_surface", "All paved or unpaved surfaces that a car can drive on with no "
     "concern of traffic rules."),
    ("flat.other", "All other forms of horizontal ground-level structures that do not belong to any "
     "of driveable_surface, curb, sidewalk and terrain. Includes elevated parts of traffic islands, "
     "delimiters, rail tracks, stairs with at most 3 steps and larger bodies of water (lakes, rivers)."),
    ("flat.sidewalk", "Sidewalk, pedestrian walkways, bike paths, etc. Part of the ground designated "
     "for pedestrians or cyclists. Sidewalks do **not** have to be next to a road."),
    ("flat.terrain", "Natural horizontal surfaces such as ground level horizontal vegetation (< 20 cm "
     "tall), grass, rolling hills, soil, sand and gravel."),
    ("static.manmade", "Includes man-made structures but not limited to: buildings, walls, guard "
     "rails, fences, poles, drainages, hydrants, flags, banners, street signs, electric circuit "
     "boxes, traffic lights, parking meters and stairs with more than 3 steps."),
    ("static.other", "Points in the background that are not distinguishable, or objects that do not "
     "match any of the above labels."),
    ("static.vegetation", "Any vegetation in the frame that is higher than the ground, including "
     "bushes, plants, potted plants, trees, etc. Only tall grass (> 20cm) is part of this, ground "
     "level grass is part of `flat.terrain`."),
    ("vehicle.ego", "The vehicle on which the cameras, radar and lidar are mounted, that is "
     "sometimes visible at the bottom of the image."),
)

VISIBILITIES = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)

_CATEGORY_NAMES = {name for name, _ in CATEGORIES}
_ATTRIBUTE_NAMES = {name for name, _ in ATTRIBUTES}


def category_token(name: str) -> str:
    if name not in _CATEGORY_NAMES:
        raise KeyError(f"unknown nuScenes category {name!r}")
    return make_token("category", name)


def attribute_token(name: str) -> str:
    if name not in _ATTRIBUTE_NAMES:
        raise KeyError(f"unknown nuScenes attribute {name!r}")
    return make_token("attribute", name)


def sensor_token(channel: str) -> str:
    return make_token("sensor", channel)


def standard_tables() -> dict[str, list[dict]]:
    """The dataset-independent tables: attribute, category, sensor, visibility."""
    from .rig import ALL_CHANNELS

    modality = {LIDAR_CHANNEL: "lidar", **{c: "camera" for c in CAMERA_CHANNELS},
                **{c: "radar" for c in RADAR_CHANNELS}}
    return {
        "attribute": [{"token": attribute_token(n), "name": n, "description": d} for n, d in ATTRIBUTES],
        "category": [{"token": category_token(n), "name": n, "description": d, "index": i}
                     for i, (n, d) in enumerate(CATEGORIES)],
        "sensor": [{"token": sensor_token(c), "channel": c, "modality": modality[c]}
                   for c in ALL_CHANNELS],
        "visibility": [{"token": t, "level": lv, "description": d} for t, lv, d in VISIBILITIES],
    }


# ------------------------------------------------------------------------------------------------
# Timeline
# ------------------------------------------------------------------------------------------------
@dataclass
class ChannelTimeline:
    """Captures of one channel, in time order.

    t_us:   (n,) int64 microseconds since scene start
    key:    (n,) bool, keyframe
    sample: (n,) int64 index of the sample the record belongs to (keyframes: their own; sweeps:
            the next keyframe's; after the last keyframe: the last sample)
    """

    t_us: np.ndarray
    key: np.ndarray
    sample: np.ndarray


def camera_trigger_offset_us(yaw_deg: float) -> int:
    """Camera keyframe time minus LiDAR keyframe time (us), from the camera's mounting yaw.

    The LiDAR turns clockwise seen from above (front -> right -> back -> left) once per 50 ms and
    each camera fires when the beam crosses its optical axis. The real data shows CAM_FRONT 35 ms
    before the LiDAR sample time, the cameras to its right following ~8 ms per 60 degrees, up to
    CAM_BACK_LEFT at ~0 ms, and CAM_FRONT_LEFT wrapped round to ~-42 ms: the offsets stay within
    +-42 ms, less than half a camera period, so the triggered capture is also the nearest."""
    turn = ((-yaw_deg) % 360.0) / 360.0 * _LIDAR_TURN_US
    off = -35_000 + turn
    if off > 5_000:          # past the sample time: the previous turn of the beam triggered it
        off -= _LIDAR_TURN_US
    return int(round(off))


def _avoid_times(t: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """``t`` with every value that equals one of ``taken`` moved 1 us later: no camera or radar
    capture shares a timestamp with a LiDAR sweep (gaps are milliseconds: order is kept)."""
    t = t.copy()
    while True:
        hit = np.isin(t, taken)
        if not hit.any():
            return t
        t[hit] += 1


def _assign_samples(key: np.ndarray) -> np.ndarray:
    """Sample index per record: keyframes their own, sweeps the next keyframe's (last: the last)."""
    kf_idx = np.flatnonzero(key)
    nxt = np.searchsorted(kf_idx, np.arange(len(key)), side="left")
    return np.minimum(nxt, len(kf_idx) - 1).astype(np.int64)


def build_timeline(rng: np.random.Generator, duration_s: float,
                   camera_yaws_deg: dict[str, float]) -> tuple[int, dict[str, ChannelTimeline]]:
    """(number of samples, channel -> ChannelTimeline) for one scene of ``duration_s`` seconds."""
    n_samples = int(np.floor((duration_s - 2 * _MARGIN_S) * 2.0 + 1e-9)) + 1
    if n_samples < 2:
        raise ValueError(f"duration_s={duration_s} is too short for two keyframes")
    margin_us = int(_MARGIN_S * 1e6)
    out: dict[str, ChannelTimeline] = {}

    # LiDAR: 20 Hz with ~0.6 ms sd of timing jitter (clipped: order is never in doubt).
    n_lidar = (n_samples - 1) * SWEEPS_PER_KEYFRAME + 1
    period = int(1e6 / LIDAR_HZ)
    t = margin_us + period * np.arange(n_lidar) + np.clip(rng.normal(0, 600, n_lidar), -1500, 1500)
    t = np.round(t).astype(np.int64)
    key = (np.arange(n_lidar) % SWEEPS_PER_KEYFRAME) == 0
    out[LIDAR_CHANNEL] = ChannelTimeline(t, key, _assign_samples(key))
    kf_t = t[key]

    # Cameras: anchored at each LiDAR keyframe + trigger offset, 5 captures evenly in between.
    for ch in CAMERA_CHANNELS:
        off = camera_trigger_offset_us(camera_yaws_deg[ch]) + rng.normal(0, 300)
        anchors = kf_t + off
        frac = np.arange(CAMERA_PER_KEYFRAME) / CAMERA_PER_KEYFRAME
        tc = anchors[:-1, None] + np.diff(anchors)[:, None] * frac[None, :]
        tc = np.concatenate([tc.ravel(), anchors[-1:]])
        jitter = np.clip(rng.normal(0, 300, len(tc)), -1000, 1000)
        jitter[::CAMERA_PER_KEYFRAME] = 0.0   # the triggered capture is on time
        tc = _avoid_times(np.round(tc + jitter).astype(np.int64), t)
        out[ch] = _keyframes_nearest(tc, kf_t)

    # Radars: free running at ~13 Hz with their own phase.
    end_us = int(duration_s * 1e6)
    for ch in RADAR_CHANNELS:
        per = 1e6 / RADAR_HZ * (1.0 + rng.normal(0, 0.01))
        phase = rng.uniform(0, per)
        n = int((end_us - phase) // per) + 1
        tr = phase + per * np.arange(n) + np.clip(rng.normal(0, 1000, n), -3000, 3000)
        tr = np.round(tr).astype(np.int64)
        tr = _avoid_times(tr[(tr >= 0) & (tr <= end_us)], t)
        out[ch] = _keyframes_nearest(tr, kf_t)
    return n_samples, out


def _keyframes_nearest(t: np.ndarray, kf_t: np.ndarray) -> ChannelTimeline:
    """Mark the capture nearest each LiDAR keyframe time as keyframe; trim to [first, last] keyframe."""
    pos = np.clip(np.searchsorted(t, kf_t), 1, len(t) - 1)
    left, right = t[pos - 1], t[pos]
    nearest = np.where(np.abs(kf_t - left) <= np.abs(right - kf_t), pos - 1, pos)
    if len(np.unique(nearest)) != len(kf_t):
        raise RuntimeError("two keyframes mapped to the same capture")
    t = t[nearest[0]:nearest[-1] + 1]
    key = np.zeros(len(t), dtype=bool)
    key[nearest - nearest[0]] = True
    return ChannelTimeline(t, key, _assign_samples(key))


# ------------------------------------------------------------------------------------------------
# Geometry helpers
# ------------------------------------------------------------------------------------------------
def yaw_quaternion(yaw: float) -> list[float]:
    """[w, x, y, z] of a rotation by ``yaw`` rad about +z."""
    return [float(np.cos(yaw / 2.0)), 0.0, 0.0, float(np.sin(yaw / 2.0))]


def pose_matrix(translation, rotation) -> np.ndarray:
    """(4, 4) from a record's translation and [w, x, y, z] rotation, exactly as the devkit builds it."""
    out = np.eye(4)
    out[:3, :3] = Quaternion(rotation).rotation_matrix
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out


@dataclass
class SensorBoxes:
    """Annotation boxes in one sensor's frame: centre (B, 3), axes (B, 3, 3) whose columns are the
    box's length, width and height directions, half (B, 3) the half extents along them."""

    center: np.ndarray
    axes: np.ndarray
    half: np.ndarray

    def __len__(self) -> int:
        return len(self.center)


def boxes_in_sensor(anns: list[dict], pose: dict, calib: dict) -> SensorBoxes:
    """Annotation records moved from global into a sensor frame through one sample_data's ego
    pose and calibration (global -> ego -> sensor, as ``NuScenes.get_sample_data`` moves boxes).

    The devkit's ``Box`` gives the same numbers up to ~1e-13 m; counting cannot tell them apart
    because no counted point lies within ``FACE_EPS_M`` of a face (``classify_points``), and the
    tests check every count against the devkit's ``points_in_box`` on the written files."""
    if not anns:
        z = np.zeros((0, 3))
        return SensorBoxes(z, np.zeros((0, 3, 3)), z)
    r_pose = quaternion_to_matrix(pose["rotation"])
    r_cs = quaternion_to_matrix(calib["rotation"])
    centre = np.array([a["translation"] for a in anns], dtype=np.float64)
    size = np.array([a["size"] for a in anns], dtype=np.float64)          # w, l, h
    centre = ((centre - np.asarray(pose["translation"], dtype=np.float64)) @ r_pose
              - np.asarray(calib["translation"], dtype=np.float64)) @ r_cs
    axes = (r_cs.T @ r_pose.T) @ quaternion_to_matrix([a["rotation"] for a in anns])
    return SensorBoxes(centre, axes, 0.5 * size[:, [1, 0, 2]])


def classify_points(xyz: np.ndarray, boxes: SensorBoxes,
                    eps: float = FACE_EPS_M) -> tuple[np.ndarray, np.ndarray]:
    """Points near box faces and the points in each box, on (N, 3) float64 sensor-frame points.

    Returns (near_face (N,) bool: within ``eps`` of a face of any box, inside or outside;
    counts (B,) int64: points inside each box that are not near any face). With the near-face
    points removed from the file, ``counts`` is exactly what the devkit's ``points_in_box`` counts
    (its inside test is inclusive; no remaining point is within ``eps`` of where it could flip).
    Candidates: points sorted by x, each box looks at the x-slab of its bounding sphere."""
    n, nb = len(xyz), len(boxes)
    near = np.zeros(n, dtype=bool)
    counts = np.zeros(nb, dtype=np.int64)
    if n == 0 or nb == 0:
        return near, counts
    order = np.argsort(xyz[:, 0], kind="stable")
    xs = xyz[order, 0]
    radius = np.linalg.norm(boxes.half, axis=1) + 0.01    # margin far above any rounding
    lo = np.searchsorted(xs, boxes.center[:, 0] - radius, side="left")
    hi = np.searchsorted(xs, boxes.center[:, 0] + radius, side="right")
    inside = []
    for b in np.flatnonzero(hi > lo):
        idx = order[lo[b]:hi[b]]
        gap = boxes.half[b] - np.abs((xyz[idx] - boxes.center[b]) @ boxes.axes[b])
        in_or_on = np.all(gap >= -eps, axis=1)
        on_face = in_or_on & np.any(np.abs(gap) < eps, axis=1)
        near[idx[on_face]] = True
        inside.append((b, idx[in_or_on & ~on_face]))
    for b, idx in inside:
        counts[b] = np.count_nonzero(~near[idx])
    return near, counts


def keyframe_counts(pts: np.ndarray, anns: list[dict], pose: dict,
                    calib: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """A keyframe sweep's points (N, >= 3, sensor frame) against the sample's annotations: returns
    (the points to write, near-face ones dropped; per-annotation counts; number dropped). The
    coordinates are taken as float32, as the files store them."""
    xyz = pts[:, :3].astype(np.float32).astype(np.float64)
    near, counts = classify_points(xyz, boxes_in_sensor(anns, pose, calib))
    return pts[~near], counts, int(np.count_nonzero(near))


# ------------------------------------------------------------------------------------------------
# Models: noise scaling
# ------------------------------------------------------------------------------------------------
def scale_noise(model, noise: float):
    """A copy of a frozen sensor-model dataclass with every float field whose name contains
    'noise' or 'sigma' multiplied by ``noise`` (the config's single noise knob)."""
    if noise == 1.0:
        return model
    changes = {}
    for f in dataclasses.fields(model):
        value = getattr(model, f.name)
        if isinstance(value, float) and ("noise" in f.name or "sigma" in f.name):
            changes[f.name] = value * float(noise)
    return dataclasses.replace(model, **changes)


# ------------------------------------------------------------------------------------------------
# The scene
# ------------------------------------------------------------------------------------------------
_TIMEZONES = {"boston-seaport": (-4, "n008")}      # everything else: Singapore, +0800, n015


def _log_meta(job: SceneJob, location: str, lighting) -> tuple[int, dict]:
    """(scene start epoch in us, log record fields) for a date in the nuScenes collection period."""
    rng = scene_rng(job, _STREAM_LOG)
    tz_h, vehicle = _TIMEZONES.get(location, (8, "n015"))
    day = datetime.date(2018, 7, 16) + datetime.timedelta(days=int(rng.integers(0, 120)))
    hour = _local_hour(lighting, rng)
    local = datetime.datetime(day.year, day.month, day.day, hour,
                              int(rng.integers(0, 60)), int(rng.integers(0, 60)))
    utc = local - datetime.timedelta(hours=tz_h)
    epoch_us = int(utc.replace(tzinfo=datetime.timezone.utc).timestamp()) * 1_000_000 \
        + int(rng.integers(0, 1_000_000))
    sign = "+" if tz_h >= 0 else "-"
    logfile = f"{vehicle}-{local:%Y-%m-%d-%H-%M-%S}{sign}{abs(tz_h):02d}00"
    return epoch_us, {"logfile": logfile, "vehicle": vehicle, "date_captured": f"{day:%Y-%m-%d}",
                      "location": location}


def _local_hour(lighting, rng) -> int:
    """Local hour consistent with the scene's lighting: dusk scenes in the early evening."""
    if getattr(lighting, "kind", "day") == "dusk":
        return int(rng.integers(18, 20))
    return int(rng.integers(8, 17))


def _make_lighting(job: SceneJob):
    """The scene's lighting (day / overcast / dusk, sun, sky), drawn from its own stream."""
    from . import camera

    return camera.Lighting.random(scene_rng(job, _STREAM_LIGHT))


def _annotate(job: SceneJob, scenario, n_samples: int, sample_tokens: list[str],
              sample_times_s: np.ndarray, ego_xy: np.ndarray, category_token, attribute_token):
    """Annotation and instance records of a scene (point counts and visibility filled later).

    Returns (annotations, instances, per-sample list of (annotation record, actor index))."""
    anns: list[dict] = []
    per_sample: list[list[tuple[dict, int]]] = []
    instances: list[dict] = []
    open_track: dict[int, dict] = {}     # actor index -> its last annotation (in the previous sample)
    inst_of: dict[int, dict] = {}
    for j in range(n_samples):
        st = scenario.actor_states(float(sample_times_s[j]))
        center = np.asarray(st.center, dtype=np.float64)
        dist = np.hypot(center[:, 0] - ego_xy[j, 0], center[:, 1] - ego_xy[j, 1]) \
            if len(center) else np.zeros(0)
        sel = np.flatnonzero(np.asarray(st.present, dtype=bool) & (dist <= ANNOTATION_RANGE_M))
        this_sample: list[tuple[dict, int]] = []
        new_track: dict[int, dict] = {}
        for a in sel:
            a = int(a)
            info = scenario.actors[a]
            length, width, height = (float(v) for v in info.size)
            token = make_token(job.seed, job.scene_name, "ann", j, a)
            prev = open_track.get(a)
            if prev is None:   # a new track: first sighting, or back after a gap (new instance)
                inst = {"token": make_token(job.seed, job.scene_name, "instance", j, a),
                        "category_token": category_token(info.category), "nbr_annotations": 0,
                        "first_annotation_token": token, "last_annotation_token": token}
                instances.append(inst)
                inst_of[a] = inst
            else:
                inst = inst_of[a]
                prev["next"] = token
            inst["nbr_annotations"] += 1
            inst["last_annotation_token"] = token
            attr = st.attribute[a]
            rec = {
                "token": token, "sample_token": sample_tokens[j], "instance_token": inst["token"],
                "visibility_token": "1",
                "attribute_tokens": [] if attr is None else [attribute_token(attr)],
                # nuScenes stores centimetre-ish precision; rounding keeps parts >= ~0.03 m inside.
                "translation": [round(float(v), 3) for v in center[a]],
                "size": [round(width, 3), round(length, 3), round(height, 3)],
                "rotation": yaw_quaternion(float(st.yaw[a])),
                "prev": "" if prev is None else prev["token"], "next": "",
                "num_lidar_pts": 0, "num_radar_pts": 0,
            }
            anns.append(rec)
            this_sample.append((rec, a))
            new_track[a] = rec
        open_track = new_track
        per_sample.append(this_sample)
    return anns, instances, per_sample


def _visibility_token(visible: float, full: float) -> str:
    if full <= 0:
        return "1"
    share = visible / full
    return str(1 + int(np.searchsorted(VISIBILITY_BINS, share, side="right")))


def write_scene(job: SceneJob) -> SceneResult:
    """Build, simulate and write one scene. Returns the scene's records
    for the tables log, map, scene, sample, sample_data, ego_pose, calibrated_sensor, instance,
    sample_annotation, plus stats (seconds per stage, point counts)."""
    from . import camera, lidar, radar
    from .world import WorldConfig, build_scenario

    t_start = time.perf_counter()
    timing = {k: 0.0 for k in ("scenario", "snapshot", "lidar", "radar", "camera", "visibility",
                               "counts", "write", "tables")}
    seed_world = int(np.random.SeedSequence([int(job.seed), scene_key(job.scene_name),
                                             _STREAM_WORLD]).generate_state(1)[0])
    t0 = time.perf_counter()
    scenario = build_scenario(WorldConfig(duration_s=float(job.duration_s),
                                          actor_density=float(job.actor_density),
                                          cover_classes=bool(job.cover_classes)), seed_world)
    timing["scenario"] += time.perf_counter() - t0
    rig: Rig = build_rig(job.image_width, job.image_height, scene_rng(job, _STREAM_RIG))
    lighting = _make_lighting(job)
    epoch_us, log_fields = _log_meta(job, scenario.location, lighting)
    cam_yaws = {ch: _yaw_of_camera(rig[ch].rotation) for ch in CAMERA_CHANNELS}
    n_samples, timeline = build_timeline(scene_rng(job, _STREAM_TIMELINE), job.duration_s, cam_yaws)

    tok = lambda *p: make_token(job.seed, job.scene_name, *p)   # noqa: E731
    log_token, scene_token, map_token = tok("log"), tok("scene"), tok("map")
    logfile = log_fields["logfile"]

    # calibrated_sensor
    calib_recs = {}
    for s in rig.sensors:
        calib_recs[s.channel] = {"token": tok("calibrated_sensor", s.channel),
                                 "sensor_token": sensor_token(s.channel), **s.record_fields()}

    # samples
    lid = timeline[LIDAR_CHANNEL]
    sample_t_us = lid.t_us[lid.key]
    sample_tokens = [tok("sample", j) for j in range(n_samples)]
    samples = [{"token": sample_tokens[j], "timestamp": int(epoch_us + sample_t_us[j]),
                "prev": sample_tokens[j - 1] if j > 0 else "",
                "next": sample_tokens[j + 1] if j + 1 < n_samples else "",
                "scene_token": scene_token} for j in range(n_samples)]

    # sample_data + ego_pose records for every capture (files written below)
    sd_recs: dict[str, list[dict]] = {}
    poses: dict[str, list[dict]] = {}
    ego_vel: dict[str, np.ndarray] = {}
    for ch, tl in timeline.items():
        sensor = rig[ch]
        recs, prs = [], []
        ext = {"lidar": ".pcd.bin", "radar": ".pcd", "camera": ".jpg"}[sensor.modality]
        tokens = [tok("sample_data", ch, i) for i in range(len(tl.t_us))]
        vels = np.zeros((len(tl.t_us), 3))
        for i, t_rel in enumerate(tl.t_us):
            ts = int(epoch_us + t_rel)
            pos, yaw, vel = scenario.ego_state(t_rel * 1e-6)
            vels[i] = vel
            prs.append({"token": tokens[i], "timestamp": ts,
                        "rotation": yaw_quaternion(float(yaw)),
                        "translation": [float(pos[0]), float(pos[1]), 0.0]})
            folder = "samples" if tl.key[i] else "sweeps"
            recs.append({
                "token": tokens[i], "sample_token": sample_tokens[int(tl.sample[i])],
                "ego_pose_token": tokens[i], "calibrated_sensor_token": calib_recs[ch]["token"],
                "timestamp": ts, "fileformat": "jpg" if sensor.modality == "camera" else "pcd",
                "is_key_frame": bool(tl.key[i]),
                "height": int(sensor.height), "width": int(sensor.width),
                "filename": f"{folder}/{ch}/{logfile}__{ch}__{ts}{ext}",
                "prev": tokens[i - 1] if i > 0 else "",
                "next": tokens[i + 1] if i + 1 < len(tokens) else "",
            })
        sd_recs[ch], poses[ch], ego_vel[ch] = recs, prs, vels

    # annotations (geometry now; counts and visibility after the sensors ran)
    lidar_kf = np.flatnonzero(lid.key)
    ego_xy = np.array([poses[LIDAR_CHANNEL][i]["translation"][:2] for i in lidar_kf])
    anns, instances, per_sample = _annotate(job, scenario, n_samples, sample_tokens,
                                            sample_t_us * 1e-6, ego_xy, category_token, attribute_token)
    n_actors = len(scenario.actors)
    vis_acc = np.zeros((n_samples, n_actors + 1))
    full_acc = np.zeros((n_samples, n_actors + 1))
    lidar_pts = np.zeros(len(anns), dtype=np.int64)
    radar_pts = np.zeros(len(anns), dtype=np.int64)
    ann_index = {id(rec): k for k, rec in enumerate(anns)}
    stats = {"lidar_points": [], "radar_points": [], "face_points_dropped": 0}

    lidar_model = scale_noise(lidar.LidarModel(), job.noise)
    # RADAR_FRONT is the long-range radar; the four corner radars are the short-range kind.
    radar_models = {ch: scale_noise(getattr(radar, "FRONT_RADAR" if ch == "RADAR_FRONT"
                                            else "CORNER_RADAR", radar.RadarModel()), job.noise)
                    for ch in RADAR_CHANNELS}
    camera_model = scale_noise(camera.CameraModel(), job.noise)
    root = job.dataroot
    for ch in {os.path.dirname(r["filename"]) for recs in sd_recs.values() for r in recs
               if r["is_key_frame"] or job.sweeps}:
        os.makedirs(os.path.join(root, ch), exist_ok=True)

    channel_ids = {ch: k for k, ch in enumerate(rig.channels)}
    for ch, tl in timeline.items():
        sensor = rig[ch]
        ego_T_sensor = sensor.ego_T_sensor
        for i in range(len(tl.t_us)):
            is_key = bool(tl.key[i])
            if not (is_key or job.sweeps):
                continue   # keyframe-only: the record stays, the file is not produced
            rec, pose = sd_recs[ch][i], poses[ch][i]
            t_s = tl.t_us[i] * 1e-6
            g_T_s = pose_matrix(pose["translation"], pose["rotation"]) @ ego_T_sensor
            rng = np.random.default_rng(np.random.SeedSequence(
                [int(job.seed), scene_key(job.scene_name), _STREAM_SENSOR + channel_ids[ch], i]))
            t0 = time.perf_counter()
            snap = scenario.snapshot(t_s, rec["timestamp"])
            timing["snapshot"] += time.perf_counter() - t0
            path = os.path.join(root, rec["filename"])
            j = int(tl.sample[i])
            if sensor.modality == "lidar":
                t0 = time.perf_counter()
                pts = lidar.simulate_lidar(snap, g_T_s, rng, lidar_model)
                timing["lidar"] += time.perf_counter() - t0
                if is_key:
                    t0 = time.perf_counter()
                    pts, counts, dropped = keyframe_counts(pts, [r for r, _ in per_sample[j]],
                                                           pose, calib_recs[ch])
                    stats["face_points_dropped"] += dropped
                    for (r, _), c in zip(per_sample[j], counts):
                        lidar_pts[ann_index[id(r)]] = c
                    stats["lidar_points"].append(len(pts))
                    timing["counts"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                lidar.write_lidar_pcd_bin(path, pts)
                timing["write"] += time.perf_counter() - t0
            elif sensor.modality == "radar":
                t0 = time.perf_counter()
                v_sensor = _sensor_velocity(scenario, t_s, pose, ego_vel[ch][i], sensor.translation)
                pts = radar.simulate_radar(snap, g_T_s, v_sensor, rng, radar_models[ch])
                timing["radar"] += time.perf_counter() - t0
                if is_key:
                    t0 = time.perf_counter()
                    pts, counts, dropped = keyframe_counts(pts, [r for r, _ in per_sample[j]],
                                                           pose, calib_recs[ch])
                    stats["face_points_dropped"] += dropped
                    for (r, _), c in zip(per_sample[j], counts):
                        radar_pts[ann_index[id(r)]] += c
                    stats["radar_points"].append(len(pts))
                    timing["counts"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                radar.write_radar_pcd(path, pts)
                timing["write"] += time.perf_counter() - t0
            else:
                t0 = time.perf_counter()
                image, ids = camera.render_camera(snap, g_T_s, sensor.intrinsics, sensor.width,
                                                  sensor.height, rng, lighting, camera_model,
                                                  instance_ids=is_key)
                timing["camera"] += time.perf_counter() - t0
                if is_key:
                    t0 = time.perf_counter()
                    vis, full = camera.instance_pixel_counts(snap, g_T_s, sensor.intrinsics,
                                                             sensor.width, sensor.height, ids)
                    m = min(len(vis), n_actors)
                    vis_acc[j, :m] += np.asarray(vis[:m], dtype=np.float64)
                    full_acc[j, :m] += np.asarray(full[:m], dtype=np.float64)
                    timing["visibility"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                camera.write_jpeg(path, image, job.jpeg_quality)
                timing["write"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    for j, items in enumerate(per_sample):
        for rec, a in items:
            k = ann_index[id(rec)]
            rec["num_lidar_pts"] = int(lidar_pts[k])
            rec["num_radar_pts"] = int(radar_pts[k])
            rec["visibility_token"] = _visibility_token(vis_acc[j, a], full_acc[j, a])

    # Map PNG of the scene's world (nuScenes semantic prior: 255 drivable, row 0 = largest y).
    mask, _res = scenario.drivable_mask()
    map_filename = f"maps/{map_token}.png"
    os.makedirs(os.path.join(root, "maps"), exist_ok=True)
    _write_png(os.path.join(root, map_filename), np.asarray(mask, dtype=np.uint8))

    scene_rec = {"token": scene_token, "log_token": log_token, "nbr_samples": n_samples,
                 "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                 "name": job.scene_name, "description": _describe(scenario, per_sample, lighting)}
    tables = {
        "log": [{"token": log_token, **log_fields}],
        "map": [{"category": "semantic_prior", "token": map_token, "filename": map_filename,
                 "log_tokens": [log_token]}],
        "scene": [scene_rec],
        "sample": samples,
        "sample_data": [r for ch in timeline for r in sd_recs[ch]],
        "ego_pose": [p for ch in timeline for p in poses[ch]],
        "calibrated_sensor": [calib_recs[s.channel] for s in rig.sensors],
        "instance": instances,
        "sample_annotation": anns,
    }
    timing["tables"] += time.perf_counter() - t0
    stats["timing"] = timing
    stats["seconds"] = time.perf_counter() - t_start
    stats["files"] = sum(1 for ch, tl in timeline.items() for k in tl.key if k or job.sweeps)
    return SceneResult(tables, stats)


def _yaw_of_camera(rotation) -> float:
    """Mounting yaw (deg) of a camera: heading of its optical axis (camera z) in the ego frame."""
    axis = Quaternion(rotation).rotation_matrix[:, 2]
    return float(np.degrees(np.arctan2(axis[1], axis[0])))


def _sensor_velocity(scenario, t_s: float, pose: dict, ego_velocity: np.ndarray,
                     mount: np.ndarray) -> np.ndarray:
    """Global velocity (3,) of a sensor mounted at ``mount`` (ego frame): ego velocity plus the
    yaw rate's contribution (omega x lever arm), yaw rate by central difference over +-10 ms."""
    dt = 0.01
    _, y0, _ = scenario.ego_state(max(t_s - dt, 0.0))
    _, y1, _ = scenario.ego_state(t_s + dt)
    omega = float(np.angle(np.exp(1j * (y1 - y0)))) / (t_s + dt - max(t_s - dt, 0.0))
    lever = Quaternion(pose["rotation"]).rotation_matrix @ np.asarray(mount, dtype=np.float64)
    return np.asarray(ego_velocity, dtype=np.float64) + np.array([-omega * lever[1], omega * lever[0], 0.0])


def _write_png(path: str, image: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(path, image):
        raise OSError(f"could not write {path}")


def _describe(scenario, per_sample, lighting) -> str:
    """A nuScenes-like free-text description: the location, the main actor kinds, night."""
    desc = getattr(scenario, "description", None)
    if desc:
        return str(desc)
    names: dict[str, int] = {}
    seen = {a for items in per_sample for _, a in items}
    for a in seen:
        short = scenario.actors[a].category.split(".")[-1]
        names[short] = names.get(short, 0) + 1
    top = sorted(names.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
    text = ", ".join(f"{n} {k}" for k, n in top) or "empty road"
    kind = getattr(lighting, "kind", "day")
    return f"Synthetic {scenario.location}, {kind}: {text}"
