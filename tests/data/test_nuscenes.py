"""NuScenesDataset against the nuScenes devkit on the real scene-0916 (keyframes only).

The data lives outside the repository (``<repo>/../shared/data``, or ``$PERCEPTION_SHARED_DATA``);
every test skips with a message where it is absent.
"""
from __future__ import annotations

import copy
import os
import pickle
import re
from collections import Counter
from functools import reduce
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from perception.data import DETECTION_CLASSES, NuScenesDataset, SensorFileError
from perception.structures import CAMERA_CHANNELS, LIDAR_FIELDS, RADAR_CHANNELS, RADAR_FIELDS, collate

pytest.importorskip("nuscenes")
from nuscenes.eval.common.utils import quaternion_yaw  # noqa: E402
from nuscenes.eval.detection.utils import category_to_detection_name  # noqa: E402
from nuscenes.nuscenes import NuScenes  # noqa: E402
from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud  # noqa: E402
from nuscenes.utils.geometry_utils import transform_matrix, view_points  # noqa: E402
from pyquaternion import Quaternion  # noqa: E402

from real_scene import DATAROOT, VERSION, needs_scene  # noqa: E402

SAMPLE = 5  # a sample with >= 9 previous LiDAR sweeps and >= 5 previous radar sweeps

pytestmark = needs_scene
NO_RADAR_FILTERS = dict(invalid_states=list(range(18)), dynprop_states=list(range(8)),
                        ambig_states=list(range(5)))


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def nusc():
    return NuScenes(version=VERSION, dataroot=str(DATAROOT), verbose=False)


@pytest.fixture(scope="module")
def ds1(nusc):
    return NuScenesDataset(DATAROOT, VERSION, split="mini_val", sweeps=1, radar_sweeps=1, nusc=nusc)


@pytest.fixture(scope="module")
def frame1(ds1):
    return ds1[SAMPLE]


@pytest.fixture(scope="module")
def gt_only(nusc):
    return NuScenesDataset(DATAROOT, VERSION, split=None, modalities=(), nusc=nusc)


def pose(rec) -> np.ndarray:
    return transform_matrix(rec["translation"], Quaternion(rec["rotation"]))


def key_ego_T_sensor(nusc, sample, channel) -> np.ndarray:
    """Devkit-built chain: sensor -> ego(t_sensor) -> global -> ego(t_lidar keyframe)."""
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    sd = nusc.get("sample_data", sample["data"][channel])
    key_pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    return reduce(np.dot, [
        transform_matrix(key_pose["translation"], Quaternion(key_pose["rotation"]), inverse=True),
        pose(nusc.get("ego_pose", sd["ego_pose_token"])),
        pose(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])),
    ])


def make_root(tmp_path: Path, real_dirs=()) -> Path:
    """A dataroot of symlinks to the shared data; channels in ``real_dirs`` get a real folder
    of per-file links so single files can be replaced without touching the shared copy."""
    root = tmp_path / "nuscenes"
    (root / "samples").mkdir(parents=True)
    os.symlink(DATAROOT / VERSION, root / VERSION)
    for chan_dir in (DATAROOT / "samples").iterdir():
        if chan_dir.name in real_dirs:
            (root / "samples" / chan_dir.name).mkdir()
            for f in chan_dir.iterdir():
                os.symlink(f, root / "samples" / chan_dir.name / f.name)
        else:
            os.symlink(chan_dir, root / "samples" / chan_dir.name)
    return root


# ----------------------------------------------------------------------------- basics
def test_len_split_and_order(nusc, ds1):
    assert len(ds1) == 41 == len(nusc.sample)
    scene = nusc.scene[0]
    assert ds1.tokens[0] == scene["first_sample_token"] and ds1.tokens[-1] == scene["last_sample_token"]
    stamps = [r.timestamp for r in ds1.records]
    assert stamps == sorted(stamps)
    with pytest.raises(ValueError, match="no scene"):
        NuScenesDataset(DATAROOT, VERSION, split="train", nusc=nusc)
    with pytest.raises(ValueError, match="unknown split"):
        NuScenesDataset(DATAROOT, VERSION, split="nope", nusc=nusc)


def test_frame_layout(nusc, frame1):
    sample = nusc.get("sample", frame1.token)
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    assert frame1.timestamp == lidar_sd["timestamp"] == sample["timestamp"]
    assert frame1.scene_name == "scene-0916"
    np.testing.assert_allclose(frame1.global_T_ego.numpy(),
                               pose(nusc.get("ego_pose", lidar_sd["ego_pose_token"])), atol=1e-9)
    assert frame1.modalities == {"lidar", "radar", "camera"}
    assert set(frame1.radars) == set(RADAR_CHANNELS) and set(frame1.cameras) == set(CAMERA_CHANNELS)
    assert frame1.lidar.fields == LIDAR_FIELDS and frame1.lidar.points.dtype == torch.float32
    assert frame1.lidar.num_sweeps == 1


# ----------------------------------------------------------------------------- LiDAR
@pytest.mark.parametrize("index", [0, SAMPLE, 40])
def test_lidar_keyframe_matches_devkit(nusc, ds1, frame1, index):
    frame = frame1 if index == SAMPLE else ds1[index]
    sample = nusc.get("sample", frame.token)
    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pc = LidarPointCloud.from_file(str(DATAROOT / sd["filename"]))
    pc.transform(pose(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])))
    ours = frame.lidar.points.numpy()
    assert ours.shape == (pc.nbr_points(), 5)
    np.testing.assert_allclose(ours[:, :3], pc.points[:3].T, atol=1e-4)
    np.testing.assert_array_equal(ours[:, 3], pc.points[3])
    assert (ours[:, 4] == 0).all()
    # For the keyframe, ego(t_lidar) is the key ego frame: ego_T_sensor is the mount.
    np.testing.assert_allclose(frame.lidar.calib.ego_T_sensor.numpy(),
                               frame.lidar.calib.mount_T_sensor.numpy(), atol=1e-12)


def test_multisweep_with_missing_sweep_files(nusc, ds1, frame1):
    ds = NuScenesDataset(DATAROOT, VERSION, split="mini_val", sweeps=10, radar_sweeps=6, nusc=nusc)
    f = ds[SAMPLE]
    assert len(ds.records[SAMPLE].lidar.sweeps) == 10  # the records exist, the files do not
    assert f.lidar.num_sweeps == 1
    assert torch.equal(f.lidar.points, frame1.lidar.points)
    for ch in RADAR_CHANNELS:
        assert f.radars[ch].num_sweeps == 1
        assert torch.equal(f.radars[ch].points, frame1.radars[ch].points)
    # Only keyframe files exist, so one sweep is used, except where the 10-sweep window reaches
    # back to the previous keyframe: sample 3 (a dropped LiDAR sweep puts that keyframe 8 back).
    lidar_only = NuScenesDataset(DATAROOT, VERSION, sweeps=10, modalities=("lidar",), nusc=nusc)
    used = [lidar_only[i].lidar.num_sweeps for i in range(len(lidar_only))]
    assert used == [1, 1, 1, 2] + [1] * 37
    f3 = lidar_only[3].lidar
    assert sorted(set(f3.column("time_lag").tolist())) == pytest.approx([0.0, 0.4], abs=1e-3)


def test_multisweep_with_real_sweep_files(nusc, tmp_path):
    """Create the sweep files (links to other keyframes' files, so each sweep differs) and compare
    with the devkit's from_file_multisweep, whose output is in the LiDAR *sensor* frame."""
    root = make_root(tmp_path)
    sample = nusc.get("sample", nusc.sample[SAMPLE]["token"])
    for chan in ("LIDAR_TOP", *RADAR_CHANNELS):
        keyframes = sorted((DATAROOT / "samples" / chan).iterdir())
        sd = nusc.get("sample_data", sample["data"][chan])
        for k in range(10):
            if sd["prev"] == "":
                break
            sd = nusc.get("sample_data", sd["prev"])
            target = root / sd["filename"]
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(keyframes[(k * 7 + 3) % len(keyframes)], target)
    nusc_tmp = copy.copy(nusc)
    nusc_tmp.dataroot = str(root)
    ds = NuScenesDataset(root, VERSION, sweeps=10, radar_sweeps=6, min_distance=1.0,
                         modalities=("lidar", "radar"), with_gt=False, nusc=nusc_tmp)
    f = ds[SAMPLE]
    assert f.lidar.num_sweeps == 10

    ego_T_lidar = f.lidar.calib.mount_T_sensor.numpy()
    pc, times = LidarPointCloud.from_file_multisweep(nusc_tmp, sample, "LIDAR_TOP", "LIDAR_TOP",
                                                     nsweeps=10, min_distance=1.0)
    pc.transform(ego_T_lidar)
    ours = f.lidar.points.numpy()
    assert ours.shape[0] == pc.nbr_points()
    np.testing.assert_allclose(ours[:, :3], pc.points[:3].T, atol=1e-4)
    np.testing.assert_array_equal(ours[:, 3], pc.points[3])
    np.testing.assert_allclose(ours[:, 4], times[0], atol=1e-6)
    assert len(np.unique(ours[:, 4])) == 10 and ours[:, 4].min() == 0

    RadarPointCloud.disable_filters()
    try:
        for ch in RADAR_CHANNELS:
            r = f.radars[ch]
            assert r.num_sweeps == 6
            rpc, rtimes = RadarPointCloud.from_file_multisweep(nusc_tmp, sample, ch, "LIDAR_TOP",
                                                               nsweeps=6, min_distance=0.0)
            rpc.transform(ego_T_lidar)
            p = r.points.numpy()
            assert p.shape == (rpc.nbr_points(), len(RADAR_FIELDS))
            np.testing.assert_allclose(p[:, :3], rpc.points[:3].T, atol=1e-4)
            np.testing.assert_allclose(p[:, 3], rpc.points[5], atol=1e-6)  # rcs
            np.testing.assert_allclose(p[:, 6], rtimes[0], atol=1e-6)
            # The devkit leaves velocities in each sweep's sensor frame: rotate them with the
            # devkit-built chain of the sweep each point came from (identified by its time lag).
            sd = nusc.get("sample_data", sample["data"][ch])
            lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            key_pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
            ego_T_global = transform_matrix(key_pose["translation"], Quaternion(key_pose["rotation"]),
                                            inverse=True)
            seen = 0
            for _ in range(6):
                T = reduce(np.dot, [ego_T_global, pose(nusc.get("ego_pose", sd["ego_pose_token"])),
                                    pose(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))])
                rows = np.abs(rtimes[0] - (lidar_sd["timestamp"] - sd["timestamp"]) * 1e-6) < 1e-4
                np.testing.assert_allclose(p[rows, 4:6], rpc.points[8:10, rows].T @ T[:2, :2].T, atol=1e-5)
                seen += rows.sum()
                sd = nusc.get("sample_data", sd["prev"])
            assert seen == len(p)
    finally:
        RadarPointCloud.default_filters()


# ----------------------------------------------------------------------------- radar
def test_radar_keyframe_matches_devkit(nusc, frame1):
    sample = nusc.get("sample", frame1.token)
    total = 0
    for ch in RADAR_CHANNELS:
        sd = nusc.get("sample_data", sample["data"][ch])
        pc = RadarPointCloud.from_file(str(DATAROOT / sd["filename"]), **NO_RADAR_FILTERS)
        T = key_ego_T_sensor(nusc, sample, ch)
        xyz = pc.points[:3].T @ T[:3, :3].T + T[:3, 3]
        vcomp = pc.points[8:10].T @ T[:2, :2].T
        vraw = pc.points[6:8].T @ T[:2, :2].T
        r = frame1.radars[ch]
        p = r.points.numpy()
        assert r.fields == RADAR_FIELDS and p.shape == (pc.nbr_points(), 13)
        np.testing.assert_allclose(p[:, :3], xyz, atol=1e-4)
        np.testing.assert_allclose(p[:, 3], pc.points[5], atol=1e-6)
        np.testing.assert_allclose(p[:, 4:6], vcomp, atol=1e-5)
        np.testing.assert_allclose(p[:, 6], (frame1.timestamp - sd["timestamp"]) * 1e-6, atol=1e-7)
        np.testing.assert_allclose(p[:, 7:9], vraw, atol=1e-5)
        for col, row in ((9, 3), (10, 11), (11, 14), (12, 10)):  # dyn_prop, ambig, invalid, quality
            np.testing.assert_array_equal(p[:, col], pc.points[row])
        np.testing.assert_allclose(r.calib.ego_T_sensor.numpy(), T, atol=1e-9)
        assert r.timestamp == sd["timestamp"]
        total += len(p)
    assert total > 100


# ----------------------------------------------------------------------------- cameras
def test_cameras_calibration_and_projection(nusc, frame1):
    sample = nusc.get("sample", frame1.token)
    projected = 0
    for ch in CAMERA_CHANNELS:
        cam = frame1.cameras[ch]
        sd = nusc.get("sample_data", sample["data"][ch])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        assert cam.data.shape == (3, 900, 1600) and cam.data.dtype == torch.uint8
        assert cam.timestamp == sd["timestamp"] and cam.token == sd["token"]
        np.testing.assert_allclose(cam.calib.intrinsics.numpy(), cs["camera_intrinsic"])
        np.testing.assert_allclose(cam.calib.mount_T_sensor.numpy(), pose(cs), atol=1e-12)
        np.testing.assert_allclose(cam.calib.ego_T_sensor.numpy(), key_ego_T_sensor(nusc, sample, ch),
                                   atol=1e-9)
        # GT centres projected with our calib land where the devkit's view_points puts them.
        _, boxes, K = nusc.get_sample_data(sd["token"])
        index = {t: i for i, t in enumerate(frame1.gt.annotation_tokens)}
        boxes = [b for b in boxes if b.token in index and b.center[2] > 1.0]
        if not boxes:
            continue
        expected = view_points(np.stack([b.center for b in boxes], 1), np.asarray(K), normalize=True)[:2].T
        centers = frame1.gt.boxes.center[[index[b.token] for b in boxes]]
        uv, depth = cam.calib.project(centers)
        np.testing.assert_allclose(uv.numpy(), expected, atol=1e-2)
        np.testing.assert_allclose(depth.numpy(), [b.center[2] for b in boxes], atol=1e-4)
        projected += len(boxes)
    assert projected > 20
    front = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    bgr = cv2.imread(str(DATAROOT / front["filename"]))
    assert torch.equal(frame1.cameras["CAM_FRONT"].data, torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1))


# ----------------------------------------------------------------------------- ground truth
def test_gt_boxes_match_devkit(nusc, gt_only):
    checked = 0
    for frame in gt_only:
        assert frame.lidar is None and frame.cameras == {} and frame.modalities == frozenset()
        sample = nusc.get("sample", frame.token)
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        ep = nusc.get("ego_pose", sd["ego_pose_token"])
        q_inv = Quaternion(ep["rotation"]).inverse
        rows, labels = [], []
        for ann_token in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            name = category_to_detection_name(ann["category_name"])
            if name is None:
                continue
            box = nusc.get_box(ann_token)
            box.velocity = nusc.box_velocity(ann_token)
            box.translate(-np.array(ep["translation"]))
            box.rotate(q_inv)
            w, l, h = box.wlh
            # The devkit's eval yaw (heading of the rotated +x axis). pyquaternion's
            # yaw_pitch_roll differs by ~4e-4 rad here, as the ego poses carry a little tilt.
            rows.append([*box.center, l, w, h, quaternion_yaw(box.orientation), *box.velocity[:2]])
            labels.append(DETECTION_CLASSES.index(name))
        expected = np.array(rows).reshape(-1, 9)
        ours = frame.gt.boxes.tensor.numpy().astype(np.float64)
        assert ours.shape == expected.shape
        np.testing.assert_allclose(ours[:, :6], expected[:, :6], atol=1e-4)
        dyaw = np.angle(np.exp(1j * (ours[:, 6] - expected[:, 6])))
        assert np.abs(dyaw).max(initial=0) < 1e-4
        np.testing.assert_allclose(ours[:, 7:], expected[:, 7:], atol=1e-4)  # NaN == NaN here
        assert frame.gt.labels.tolist() == labels
        checked += len(ours)
    assert checked > 1000


def test_gt_labels_attributes_and_counts(nusc, gt_only):
    expected_classes, expected_attrs = Counter(), Counter()
    for ann in nusc.sample_annotation:
        name = category_to_detection_name(ann["category_name"])
        if name is None:
            continue
        expected_classes[name] += 1
        attrs = [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]
        expected_attrs[attrs[0] if attrs else None] += 1
    from perception.data import ATTRIBUTE_NAMES

    ours_classes, ours_attrs = Counter(), Counter()
    for frame in gt_only:
        gt = frame.gt
        ours_classes.update(DETECTION_CLASSES[i] for i in gt.labels.tolist())
        ours_attrs.update(ATTRIBUTE_NAMES[i] if i >= 0 else None for i in gt.attributes.tolist())
        for i, tok in enumerate(gt.annotation_tokens):
            ann = nusc.get("sample_annotation", tok)
            assert gt.instance_tokens[i] == ann["instance_token"]
            assert gt.num_lidar_pts[i] == ann["num_lidar_pts"] and gt.num_radar_pts[i] == ann["num_radar_pts"]
            assert gt.visibility[i] == int(ann["visibility_token"])
        assert gt.labels.dtype == torch.int64 and gt.labels.min() >= 0 and gt.labels.max() < 10
    assert ours_classes == expected_classes
    assert ours_attrs == expected_attrs
    assert len(ours_classes) == 6  # 4 of the 10 classes have no GT in this scene


# ----------------------------------------------------------------------------- loading
def test_dataloader_workers_match_direct_indexing(nusc):
    ds = NuScenesDataset(DATAROOT, VERSION, sweeps=3, radar_sweeps=2, nusc=nusc)
    subset = torch.utils.data.Subset(ds, [0, 7, 20, 40])
    loader = torch.utils.data.DataLoader(subset, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [t for b in batches for t in b.tokens] == [ds.tokens[i] for i in (0, 7, 20, 40)]
    for b_index, batch in enumerate(batches):
        assert batch.images.shape == (2, 6, 3, 900, 1600) and batch.camera_mask.all()
        for j in range(2):
            direct = ds[subset.indices[2 * b_index + j]]
            assert torch.equal(batch.lidar_points[j], direct.lidar.points)
            assert torch.equal(batch.images[j, 0], direct.cameras[CAMERA_CHANNELS[0]].data)
            torch.testing.assert_close(batch.ego_T_camera[j, 3],
                                       direct.cameras[CAMERA_CHANNELS[3]].calib.ego_T_sensor.float())
            assert torch.equal(batch.gt[j].boxes.tensor.nan_to_num(), direct.gt.boxes.tensor.nan_to_num())
            assert batch.gt[j].instance_tokens == direct.gt.instance_tokens


def test_dataset_pickles_without_devkit_state(nusc):
    ds = NuScenesDataset(DATAROOT, VERSION, sweeps=2, modalities=("lidar", "radar"), nusc=nusc)
    blob = pickle.dumps(ds)
    assert b"nuscenes.nuscenes" not in blob  # the devkit object (all tables) is not carried along
    clone = pickle.loads(blob)
    a, b = ds[SAMPLE], clone[SAMPLE]
    assert a.token == b.token and torch.equal(a.lidar.points, b.lidar.points)
    assert torch.equal(a.radars["RADAR_FRONT"].points, b.radars["RADAR_FRONT"].points)
    assert torch.equal(a.gt.boxes.tensor.nan_to_num(), b.gt.boxes.tensor.nan_to_num())


def test_corrupt_and_missing_keyframe_files_raise_clearly(nusc, tmp_path):
    root = make_root(tmp_path, real_dirs=("LIDAR_TOP", "RADAR_FRONT", "CAM_BACK"))
    ds = NuScenesDataset(root, VERSION, sweeps=10, nusc=nusc)
    sample = nusc.get("sample", ds.tokens[3])

    def path_of(chan: str) -> Path:
        return root / nusc.get("sample_data", sample["data"][chan])["filename"]

    def write(path: Path, data: bytes) -> None:
        path.unlink()
        path.write_bytes(data)

    def raises(*words: str):
        return pytest.raises(SensorFileError, match=".*".join(re.escape(w) for w in words))

    lidar = path_of("LIDAR_TOP")
    original = lidar.read_bytes()
    write(lidar, original[:1003])  # truncated mid-point
    with raises("corrupt", lidar.name):
        ds[3]
    lidar.unlink()
    with raises("not found", lidar.name):
        ds[3]
    lidar.write_bytes(original)
    assert ds[3].lidar.num_sweeps == 2  # see test_multisweep_with_missing_sweep_files

    radar = path_of("RADAR_FRONT")
    blob = radar.read_bytes()
    # The files carry trailing bytes after the announced POINTS: cut inside the point data.
    write(radar, blob[:blob.index(b"DATA binary\n") + 12 + 100])
    with raises("corrupt", radar.name):
        ds[3]
    write(radar, b"garbage\n")
    with raises("corrupt", radar.name):
        ds[3]
    radar.unlink()
    os.symlink(DATAROOT / nusc.get("sample_data", sample["data"]["RADAR_FRONT"])["filename"], radar)

    camera = path_of("CAM_BACK")
    write(camera, b"not a jpeg")
    with raises("corrupt", camera.name):
        ds[3]
    camera.unlink()
    with raises("not found", camera.name):
        ds[3]


def test_skip_sensor_leaves_only_the_bad_sensor_out(nusc, tmp_path):
    root = make_root(tmp_path, real_dirs=("LIDAR_TOP", "CAM_BACK"))
    strict = NuScenesDataset(root, VERSION, sweeps=1, nusc=nusc)
    lenient = NuScenesDataset(root, VERSION, sweeps=1, nusc=nusc, on_error="skip_sensor")
    sample = nusc.get("sample", strict.tokens[3])
    lidar = root / nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["filename"]
    camera = root / nusc.get("sample_data", sample["data"]["CAM_BACK"])["filename"]
    good = strict[3]
    lidar.unlink()
    lidar.write_bytes(b"\x00" * 7)  # not a whole number of points
    camera.unlink()
    with pytest.raises(SensorFileError):
        strict[3]
    with pytest.warns(RuntimeWarning) as record:
        frame = lenient[3]
    messages = " ".join(str(w.message) for w in record)
    assert lidar.name in messages and camera.name in messages
    assert frame.lidar is None and "CAM_BACK" not in frame.cameras
    assert frame.modalities == {"radar", "camera"}
    # Everything else is exactly what the strict reader gives.
    assert set(frame.cameras) == set(good.cameras) - {"CAM_BACK"}
    assert torch.equal(frame.cameras["CAM_FRONT"].data, good.cameras["CAM_FRONT"].data)
    assert torch.equal(frame.radars["RADAR_FRONT"].points, good.radars["RADAR_FRONT"].points)
    assert torch.equal(frame.gt.boxes.tensor.nan_to_num(), good.gt.boxes.tensor.nan_to_num())
    # Other frames are untouched.
    assert torch.equal(lenient[2].lidar.points, strict[2].lidar.points)
    with pytest.raises(ValueError, match="on_error"):
        NuScenesDataset(root, VERSION, nusc=nusc, on_error="ignore")
