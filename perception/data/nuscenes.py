"""nuScenes (devkit layout) -> :class:`perception.structures.Frame`.

Design: ``NuScenesDataset.__init__`` walks the devkit tables once and keeps, per sample, a plain
record (file paths, float64 4x4 matrices, GT arrays). The ``NuScenes`` object is then dropped, so
the dataset pickles cheaply into ``DataLoader`` workers and ``__getitem__`` is only file I/O and
numpy.

Frames and units (see ``perception.structures.frame``): everything a Frame holds is in the ego
frame at the sample's LiDAR keyframe time ("key ego"); metres, seconds, µs timestamps.

- LiDAR (``LIDAR_FIELDS``): ``x, y, z, intensity, time_lag``. ``sweeps=K`` aggregates the keyframe
  and up to K-1 previous sweeps (sample_data ``prev`` chain), each motion-compensated into the key
  ego frame through the ego poses: ``key_ego_T_global @ global_T_ego(t) @ ego_T_sensor``, one matrix
  per sweep. ``time_lag = (t_frame - t_sweep) / 1e6`` s (>= 0 for past sweeps).
- Radar (``RADAR_FIELDS``): ``x, y, z, rcs, vx_comp, vy_comp, time_lag, vx, vy, dyn_prop,
  ambig_state, invalid_state, is_quality_valid``; all returns kept (the devkit's default filters
  are off); positions moved like LiDAR, velocities (``vx_comp, vy_comp`` and raw ``vx, vy``)
  *rotated* into the key ego frame; ``time_lag`` relative to the Frame timestamp (LiDAR keyframe),
  so it is slightly negative for a radar keyframe stamped after the LiDAR.
- Cameras: (3, H, W) uint8 RGB; ``calib.ego_T_sensor`` maps the camera frame into the *key ego*
  frame through the camera's own ego pose (cameras fire up to ~50 ms away from the LiDAR);
  ``calib.mount_T_sensor`` keeps the raw calibrated_sensor extrinsic. ``SensorSample.timestamp`` is
  the camera's own time.
- GT: annotations of the 10 detection classes (devkit ``category_to_detection_name``), boxes in the
  key ego frame; velocity from ``NuScenes.box_velocity`` rotated into the key ego frame, NaN where
  the devkit cannot estimate it (kept NaN, as the devkit does: a loss must mask it).

Missing files: a missing *sweep* file (keyframe-only downloads) is skipped and
``SensorSample.num_sweeps`` says how many sweeps were used. A missing or corrupt *keyframe* file
(or a corrupt sweep file) raises :class:`SensorFileError` naming the file.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection

import cv2
import numpy as np
import torch

from perception.data.poses import invert_pose, pose_matrix, quaternion_to_matrix  # noqa: F401
from perception.structures import (
    ATTRIBUTE_NAMES,
    CAMERA_CHANNELS,
    DETECTION_CLASSES,
    LIDAR_CHANNEL,
    LIDAR_FIELDS,
    RADAR_CHANNELS,
    RADAR_FIELDS,
    Boxes3D,
    Calibration,
    Frame,
    GroundTruth,
    SensorSample,
)

MODALITIES = ("lidar", "radar", "camera")


class SensorFileError(OSError):
    """A sensor file needed for a frame is missing, truncated or malformed."""


# ---------------------------------------------------------------------------------------------
# File readers
# ---------------------------------------------------------------------------------------------
def read_lidar_bin(path: str) -> np.ndarray:
    """Read a nuScenes ``.pcd.bin`` (float32 x, y, z, intensity, ring).

    Returns:
        (N, 5) float32, sensor frame, metres.
    Raises:
        SensorFileError: missing, empty or not a whole number of 5-float records.
    """
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as e:
        raise SensorFileError(f"LiDAR file not found: {path}") from e
    if raw.size == 0 or raw.size % 20 != 0:
        raise SensorFileError(
            f"corrupt LiDAR file {path}: {raw.size} bytes is not a positive multiple of 20 "
            "(5 float32 per point)"
        )
    return raw.view(np.float32).reshape(-1, 5)


_PCD_TYPES = {("F", 2): "<f2", ("F", 4): "<f4", ("F", 8): "<f8",
              ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8",
              ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8"}


def read_radar_pcd(path: str) -> np.ndarray:
    """Read a nuScenes radar ``.pcd`` (binary PCD v0.7) with every return kept (no filters).

    Returns:
        Structured array of N points whose field names are the file's ``FIELDS`` (x y z dyn_prop
        id rcs vx vy vx_comp vy_comp is_quality_valid ambig_state x_rms y_rms invalid_state pdh0
        vx_rms vy_rms); empty when the file flags "no returns" with NaNs in its first point.
    Raises:
        SensorFileError: missing file, malformed header, or fewer bytes than ``POINTS`` announces.
    """
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError as e:
        raise SensorFileError(f"radar file not found: {path}") from e
    header: dict[str, list[str]] = {}
    pos = 0
    try:
        while True:
            end = blob.index(b"\n", pos)
            line = blob[pos:end].decode("ascii").strip()
            pos = end + 1
            if not line or line.startswith("#"):
                continue
            key, *values = line.split()
            header[key] = values
            if key == "DATA":
                break
        if header["DATA"] != ["binary"]:
            raise ValueError(f"DATA {header['DATA']} (only binary is supported)")
        if any(int(c) != 1 for c in header["COUNT"]):
            raise ValueError("COUNT > 1 is not supported")
        dtype = np.dtype({
            "names": header["FIELDS"],
            "formats": [_PCD_TYPES[(t, int(s))] for t, s in zip(header["TYPE"], header["SIZE"])],
        })
        n = int(header["POINTS"][0])
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise SensorFileError(f"corrupt radar file {path}: bad PCD header ({e})") from e
    if len(blob) - pos < n * dtype.itemsize:
        raise SensorFileError(
            f"corrupt radar file {path}: {len(blob) - pos} data bytes, expected "
            f"{n} points x {dtype.itemsize} bytes"
        )
    pts = np.frombuffer(blob, dtype=dtype, count=n, offset=pos)
    # The devkit's convention: a NaN in the first point means the sensor returned nothing.
    if n and any(np.isnan(pts[0][name]) for name in dtype.names if pts.dtype[name].kind == "f"):
        return pts[:0]
    return pts


def read_image_rgb(path: str) -> np.ndarray:
    """Read an image file -> (H, W, 3) uint8 RGB. Raises SensorFileError if unreadable."""
    if not os.path.isfile(path):
        raise SensorFileError(f"camera image not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SensorFileError(f"corrupt camera image {path}: OpenCV could not decode it")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------
# Per-sample records (plain, picklable)
# ---------------------------------------------------------------------------------------------
@dataclass
class _Sweep:
    filename: str  # relative to dataroot
    timestamp: int  # µs
    key_ego_T_sensor: np.ndarray  # (4, 4) sensor at sweep time -> key ego


@dataclass
class _PointSensorRecord:
    channel: str
    token: str
    mount_T_sensor: np.ndarray
    sweeps: list[_Sweep]  # [0] is the keyframe


@dataclass
class _CameraRecord:
    channel: str
    token: str
    filename: str
    timestamp: int
    intrinsics: np.ndarray
    mount_T_sensor: np.ndarray
    key_ego_T_sensor: np.ndarray


@dataclass
class _SampleRecord:
    token: str
    timestamp: int
    scene_token: str
    scene_name: str
    global_T_ego: np.ndarray
    lidar: _PointSensorRecord | None
    radars: dict[str, _PointSensorRecord]
    cameras: dict[str, _CameraRecord]
    gt: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------
class NuScenesDataset(torch.utils.data.Dataset):
    """Frames of a nuScenes split.

    Args:
        dataroot: folder holding ``samples/``, ``sweeps/`` and the ``version`` tables.
        version: table folder, e.g. ``"v1.0-trainval"``, ``"v1.0-mini"``.
        split: a devkit split name (``nuscenes.utils.splits.create_splits_scenes()``: ``train``,
            ``val``, ``mini_train``, ``mini_val``, ...), or None / ``"all"`` for every scene in
            the tables. Scenes of the split absent from the tables are ignored; an empty result
            raises ``ValueError``.
        sweeps: LiDAR sweeps in all (keyframe + ``sweeps - 1`` previous), >= 1.
        radar_sweeps: radar sweeps in all, per radar channel, >= 1.
        modalities: which sensors to load, subset of ``("lidar", "radar", "camera")``.
        min_distance: drop points with ``|x| < d and |y| < d`` in the sensor frame (each LiDAR
            sweep, as the devkit's ``remove_close``); 0 keeps every point.
        with_gt: attach GroundTruth (False for test splits without annotations).
        nusc: an already loaded ``NuScenes`` for these tables (saves loading them twice); it is
            not kept.
        verbose: devkit loading verbosity.
        on_error: what a missing or corrupt keyframe file does. ``"raise"`` (default): a
            :class:`SensorFileError` naming the file. ``"skip_sensor"``: that sensor is left out
            of the frame (as if it had failed on the car) and a ``RuntimeWarning`` names the
            file, so one bad file does not end an evaluation or a replay; the model masks the
            missing sensor.

    ``ds[i]`` returns a :class:`Frame` (see the module docstring for frames and columns).
    """

    def __init__(
        self,
        dataroot: str | os.PathLike,
        version: str = "v1.0-trainval",
        split: str | None = None,
        sweeps: int = 10,
        radar_sweeps: int = 6,
        modalities: Collection[str] = MODALITIES,
        min_distance: float = 0.0,
        with_gt: bool = True,
        nusc=None,
        verbose: bool = False,
        on_error: str = "raise",
    ):
        if sweeps < 1 or radar_sweeps < 1:
            raise ValueError(f"sweeps and radar_sweeps must be >= 1, got {sweeps}, {radar_sweeps}")
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
        if on_error not in ("raise", "skip_sensor"):
            raise ValueError(f"on_error must be 'raise' or 'skip_sensor', got {on_error!r}")
        self.on_error = on_error
        self.dataroot = str(Path(dataroot))
        self.version = version
        self.split = split
        self.sweeps = int(sweeps)
        self.radar_sweeps = int(radar_sweeps)
        self.modalities = tuple(m for m in MODALITIES if m in set(modalities))
        self.min_distance = float(min_distance)
        self.with_gt = with_gt

        if nusc is None:
            from nuscenes.nuscenes import NuScenes

            nusc = NuScenes(version=version, dataroot=self.dataroot, verbose=verbose)
        self.records: list[_SampleRecord] = _build_records(
            nusc, split, self.sweeps, self.radar_sweeps, with_gt
        )
        # nusc is deliberately not stored: records are all __getitem__ needs, and they pickle.

    def __len__(self) -> int:
        return len(self.records)

    @property
    def tokens(self) -> list[str]:
        """Sample tokens in dataset order."""
        return [r.token for r in self.records]

    def index_of(self, token: str) -> int:
        """Position of a sample token (ValueError if absent)."""
        return self.tokens.index(token)

    def __getitem__(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        rec = self.records[index]
        lidar = None
        radars: dict[str, SensorSample] = {}
        cameras: dict[str, SensorSample] = {}
        if "lidar" in self.modalities and rec.lidar is not None:
            lidar = self._guarded(self._load_lidar, rec.lidar, rec.timestamp)
        if "radar" in self.modalities:
            radars = {ch: self._guarded(self._load_radar, r, rec.timestamp)
                      for ch, r in rec.radars.items()}
        if "camera" in self.modalities:
            cameras = {ch: self._guarded(self._load_camera, c) for ch, c in rec.cameras.items()}
        radars = {ch: v for ch, v in radars.items() if v is not None}
        cameras = {ch: v for ch, v in cameras.items() if v is not None}
        gt = None
        if rec.gt:
            g = rec.gt
            gt = GroundTruth(
                boxes=Boxes3D(torch.from_numpy(g["boxes"].copy())),
                labels=torch.from_numpy(g["labels"].copy()),
                attributes=torch.from_numpy(g["attributes"].copy()),
                num_lidar_pts=torch.from_numpy(g["num_lidar_pts"].copy()),
                num_radar_pts=torch.from_numpy(g["num_radar_pts"].copy()),
                visibility=torch.from_numpy(g["visibility"].copy()),
                instance_tokens=list(g["instance_tokens"]),
                annotation_tokens=list(g["annotation_tokens"]),
            )
        return Frame(
            token=rec.token,
            timestamp=rec.timestamp,
            global_T_ego=torch.from_numpy(rec.global_T_ego.copy()),
            scene_token=rec.scene_token,
            scene_name=rec.scene_name,
            lidar=lidar,
            radars=radars,
            cameras=cameras,
            gt=gt,
        )

    def _guarded(self, load, *args) -> SensorSample | None:
        """``load(*args)``, or None (with a warning naming the file) when ``on_error`` is
        ``"skip_sensor"`` and the sensor's keyframe file is missing or corrupt."""
        try:
            return load(*args)
        except SensorFileError as e:
            if self.on_error == "raise":
                raise
            warnings.warn(f"{e}; the sensor is left out of this frame", RuntimeWarning,
                          stacklevel=2)
            return None

    # ------------------------------------------------------------------ loaders
    def _existing_sweeps(self, rec: _PointSensorRecord, n: int) -> list[_Sweep]:
        """Keyframe (must exist) + the previous sweeps whose files exist, up to n in all."""
        key = rec.sweeps[0]
        key_path = os.path.join(self.dataroot, key.filename)
        if not os.path.isfile(key_path):
            raise SensorFileError(f"{rec.channel} keyframe file not found: {key_path}")
        out = [key]
        for s in rec.sweeps[1:n]:
            if os.path.isfile(os.path.join(self.dataroot, s.filename)):
                out.append(s)
        return out

    def _load_lidar(self, rec: _PointSensorRecord, t_frame: int) -> SensorSample:
        used = self._existing_sweeps(rec, self.sweeps)
        clouds = []
        for s in used:
            raw = read_lidar_bin(os.path.join(self.dataroot, s.filename))
            if self.min_distance > 0:
                near = (np.abs(raw[:, 0]) < self.min_distance) & (np.abs(raw[:, 1]) < self.min_distance)
                raw = raw[~near]
            T = s.key_ego_T_sensor
            out = np.empty((len(raw), len(LIDAR_FIELDS)), dtype=np.float32)
            out[:, :3] = raw[:, :3] @ T[:3, :3].T.astype(np.float32) + T[:3, 3].astype(np.float32)
            out[:, 3] = raw[:, 3]
            out[:, 4] = (t_frame - s.timestamp) * 1e-6
            clouds.append(out)
        return self._point_sample(rec, used, clouds, LIDAR_FIELDS)

    @staticmethod
    def _point_sample(rec: _PointSensorRecord, used: list[_Sweep], clouds: list[np.ndarray],
                      fields: tuple[str, ...]) -> SensorSample:
        """The aggregated sweeps of a point sensor as a SensorSample stamped at its keyframe."""
        key = used[0]
        return SensorSample(
            channel=rec.channel,
            data=torch.from_numpy(np.concatenate(clouds, axis=0)),
            calib=Calibration(ego_T_sensor=key.key_ego_T_sensor, mount_T_sensor=rec.mount_T_sensor),
            timestamp=key.timestamp,
            num_sweeps=len(used),
            fields=fields,
            token=rec.token,
        )

    def _load_radar(self, rec: _PointSensorRecord, t_frame: int) -> SensorSample:
        used = self._existing_sweeps(rec, self.radar_sweeps)
        clouds = []
        for s in used:
            pts = read_radar_pcd(os.path.join(self.dataroot, s.filename))
            T = s.key_ego_T_sensor
            R = T[:3, :3]
            out = np.empty((len(pts), len(RADAR_FIELDS)), dtype=np.float32)
            xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1).astype(np.float64)
            out[:, 0:3] = xyz @ R.T + T[:3, 3]
            out[:, 3] = pts["rcs"]
            # Radar Doppler velocities are 2D in the sensor plane (vz = 0): rotate, never translate.
            for cols, (fx, fy) in (((4, 5), ("vx_comp", "vy_comp")), ((7, 8), ("vx", "vy"))):
                v = np.stack([pts[fx], pts[fy]], axis=1).astype(np.float64)
                out[:, list(cols)] = v @ R[:2, :2].T
            out[:, 6] = (t_frame - s.timestamp) * 1e-6
            for col, name in ((9, "dyn_prop"), (10, "ambig_state"), (11, "invalid_state"),
                              (12, "is_quality_valid")):
                out[:, col] = pts[name]
            clouds.append(out)
        return self._point_sample(rec, used, clouds, RADAR_FIELDS)

    def _load_camera(self, rec: _CameraRecord) -> SensorSample:
        img = read_image_rgb(os.path.join(self.dataroot, rec.filename))
        return SensorSample(
            channel=rec.channel,
            data=torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            calib=Calibration(
                ego_T_sensor=rec.key_ego_T_sensor,
                intrinsics=rec.intrinsics,
                mount_T_sensor=rec.mount_T_sensor,
            ),
            timestamp=rec.timestamp,
            num_sweeps=1,
            fields=(),
            token=rec.token,
        )


# ---------------------------------------------------------------------------------------------
# Table walking (runs once, in __init__)
# ---------------------------------------------------------------------------------------------
def _scene_names_for_split(split: str | None) -> set[str] | None:
    if split is None or split == "all":
        return None
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; devkit splits: {sorted(splits)} or 'all'/None")
    return set(splits[split])


def _build_records(nusc, split, sweeps: int, radar_sweeps: int, with_gt: bool) -> list[_SampleRecord]:
    wanted = _scene_names_for_split(split)
    scenes = [s for s in nusc.scene if wanted is None or s["name"] in wanted]
    if not scenes:
        raise ValueError(
            f"split {split!r} has no scene in {nusc.version} at {nusc.dataroot} "
            f"(scenes there: {sorted(s['name'] for s in nusc.scene)})"
        )
    pose_cache: dict[str, np.ndarray] = {}
    calib_cache: dict[str, np.ndarray] = {}

    def global_T_ego(sd) -> np.ndarray:
        tok = sd["ego_pose_token"]
        if tok not in pose_cache:
            p = nusc.get("ego_pose", tok)
            pose_cache[tok] = pose_matrix(p["translation"], p["rotation"])
        return pose_cache[tok]

    def mount(sd) -> np.ndarray:
        tok = sd["calibrated_sensor_token"]
        if tok not in calib_cache:
            c = nusc.get("calibrated_sensor", tok)
            calib_cache[tok] = pose_matrix(c["translation"], c["rotation"])
        return calib_cache[tok]

    def point_record(channel: str, sd_token: str, n: int, key_ego_T_global: np.ndarray):
        sd = nusc.get("sample_data", sd_token)
        chain = []
        while True:
            chain.append(_Sweep(
                filename=sd["filename"],
                timestamp=int(sd["timestamp"]),
                key_ego_T_sensor=key_ego_T_global @ global_T_ego(sd) @ mount(sd),
            ))
            if len(chain) >= n or sd["prev"] == "":
                break
            sd = nusc.get("sample_data", sd["prev"])
        first = nusc.get("sample_data", sd_token)
        return _PointSensorRecord(channel, sd_token, mount(first), chain)

    records = []
    for scene in scenes:
        sample_token = scene["first_sample_token"]
        while sample_token:
            sample = nusc.get("sample", sample_token)
            data = sample["data"]
            # The LiDAR keyframe defines the Frame's ego frame; without LiDAR fall back to the
            # first channel present so a frame stays expressible.
            ref_channel = LIDAR_CHANNEL if LIDAR_CHANNEL in data else sorted(data)[0]
            ref_sd = nusc.get("sample_data", data[ref_channel])
            g_T_e = global_T_ego(ref_sd)
            e_T_g = invert_pose(g_T_e)

            lidar = None
            if LIDAR_CHANNEL in data:
                lidar = point_record(LIDAR_CHANNEL, data[LIDAR_CHANNEL], sweeps, e_T_g)
            radars = {
                ch: point_record(ch, data[ch], radar_sweeps, e_T_g)
                for ch in RADAR_CHANNELS if ch in data
            }
            cameras = {}
            for ch in CAMERA_CHANNELS:
                if ch not in data:
                    continue
                sd = nusc.get("sample_data", data[ch])
                cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                cameras[ch] = _CameraRecord(
                    channel=ch,
                    token=data[ch],
                    filename=sd["filename"],
                    timestamp=int(sd["timestamp"]),
                    intrinsics=np.asarray(cs["camera_intrinsic"], dtype=np.float64),
                    mount_T_sensor=mount(sd),
                    key_ego_T_sensor=e_T_g @ global_T_ego(sd) @ mount(sd),
                )
            gt = _ground_truth(nusc, sample, e_T_g) if with_gt else {}
            records.append(_SampleRecord(
                token=sample["token"],
                timestamp=int(ref_sd["timestamp"]),
                scene_token=scene["token"],
                scene_name=scene["name"],
                global_T_ego=g_T_e,
                lidar=lidar,
                radars=radars,
                cameras=cameras,
                gt=gt,
            ))
            sample_token = sample["next"]
    return records


def _ground_truth(nusc, sample, ego_T_global: np.ndarray) -> dict[str, object]:
    """GT arrays of one sample in the key ego frame (see GroundTruth for the fields)."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    class_index = {name: i for i, name in enumerate(DETECTION_CLASSES)}
    attr_index = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}
    anns = []
    for tok in sample["anns"]:
        ann = nusc.get("sample_annotation", tok)
        name = category_to_detection_name(ann["category_name"])
        if name is not None:
            anns.append((ann, class_index[name]))
    m = len(anns)
    centers = np.array([a["translation"] for a, _ in anns], dtype=np.float64).reshape(m, 3)
    wlh = np.array([a["size"] for a, _ in anns], dtype=np.float64).reshape(m, 3)
    rot = np.array([a["rotation"] for a, _ in anns], dtype=np.float64).reshape(m, 4)
    vel = np.array([nusc.box_velocity(a["token"]) for a, _ in anns], dtype=np.float64).reshape(m, 3)
    boxes = Boxes3D.from_nuscenes(centers, wlh, rot, None, dtype=torch.float64)
    boxes = boxes.transform(torch.from_numpy(ego_T_global)).tensor.numpy()
    # Rotate the full 3D velocity (as the devkit's Box.rotate does): ego poses carry a little
    # roll/pitch, so vz leaks into vx, vy; Boxes3D.transform only sees (vx, vy, 0).
    boxes[:, 7:9] = (vel @ ego_T_global[:3, :3].T)[:, :2]
    boxes = boxes.astype(np.float32)

    def attribute(ann) -> int:
        # nuScenes annotations carry at most one attribute in practice; the first one is kept.
        for t in ann["attribute_tokens"]:
            return attr_index.get(nusc.get("attribute", t)["name"], -1)
        return -1

    return {
        "boxes": boxes,
        "labels": np.array([c for _, c in anns], dtype=np.int64),
        "attributes": np.array([attribute(a) for a, _ in anns], dtype=np.int64),
        "num_lidar_pts": np.array([a["num_lidar_pts"] for a, _ in anns], dtype=np.int64),
        "num_radar_pts": np.array([a["num_radar_pts"] for a, _ in anns], dtype=np.int64),
        "visibility": np.array(
            [int(a["visibility_token"]) if str(a["visibility_token"]).isdigit() else 0
             for a, _ in anns],
            dtype=np.int64,
        ),
        "instance_tokens": [a["instance_token"] for a, _ in anns],
        "annotation_tokens": [a["token"] for a, _ in anns],
    }
