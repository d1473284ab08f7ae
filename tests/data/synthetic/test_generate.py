"""The synthetic dataset is a complete nuScenes dataset: the devkit loads it, its files load,
its chains hold, its point counts are the devkit's, DetectionEval runs on the standard splits,
and generation is deterministic (seed -> bytes; parallel == serial).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
import real_scene
import yaml

from perception.data.synthetic.generate import TABLE_NAMES, SynthConfig, scene_names
from perception.data.synthetic.rig import ALL_CHANNELS, CAMERA_CHANNELS, RADAR_CHANNELS

ALL_STATES = list(range(256))     # radar filters disabled


def _radar_pc(path):
    from nuscenes.utils.data_classes import RadarPointCloud

    return RadarPointCloud.from_file(path, invalid_states=ALL_STATES, dynprop_states=ALL_STATES,
                                     ambig_states=ALL_STATES)


def _tables(root, version):
    return {t: json.load(open(os.path.join(root, version, f"{t}.json"))) for t in TABLE_NAMES}


def _file_hashes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            with open(path, "rb") as fh:
                out[rel] = hashlib.sha1(fh.read()).hexdigest()
    return out


def _channel_records(nusc):
    """(scene token, channel) -> sample_data records sorted by time."""
    out = defaultdict(list)
    for sd in nusc.sample_data:
        scene = nusc.get("sample", sd["sample_token"])["scene_token"]
        out[(scene, sd["channel"])].append(sd)
    for recs in out.values():
        recs.sort(key=lambda r: r["timestamp"])
    return out


# ------------------------------------------------------------------------------------------------
def test_scene_names_follow_devkit_splits():
    from nuscenes.utils import splits

    mini = scene_names(SynthConfig())
    assert mini == sorted(splits.mini_train + splits.mini_val)
    two = scene_names(SynthConfig(scenes=2))
    assert len(set(two) & set(splits.mini_val)) == 1 and len(set(two) & set(splits.mini_train)) == 1
    tv = scene_names(SynthConfig(version="v1.0-trainval"))
    assert len(tv) == 20 and len(set(tv) & set(splits.val)) == 4
    assert set(tv) <= set(splits.train) | set(splits.val)
    with pytest.raises(ValueError):
        SynthConfig(version="v1.0-test")


def test_val_scenes_sets_the_val_share():
    from nuscenes.utils import splits

    big_val = scene_names(SynthConfig(version="v1.0-trainval", scenes=24, val_scenes=24))
    assert big_val == sorted(splits.val[:24])          # no train scene, the devkit's order
    mixed = scene_names(SynthConfig(version="v1.0-trainval", scenes=10, val_scenes=3))
    assert len(set(mixed) & set(splits.val)) == 3 and len(mixed) == 10
    # The default rule's val scenes are the first of the same list: the same scenes at a seed.
    default = scene_names(SynthConfig(version="v1.0-trainval", scenes=40))
    assert set(default) & set(splits.val) <= set(big_val)
    assert scene_names(SynthConfig(scenes=2, val_scenes=2)) == sorted(splits.mini_val)
    for bad, match in (({"scenes": 3, "val_scenes": 4}, "scenes >= val_scenes"),
                       ({"val_scenes": 2}, "scenes >= val_scenes"),
                       ({"scenes": 3, "val_scenes": 0}, "val_scenes must be >= 1")):
        with pytest.raises(ValueError, match=match):
            SynthConfig(**bad)
    with pytest.raises(ValueError, match="only 2 val scenes"):
        scene_names(SynthConfig(scenes=3, val_scenes=3))


def test_cover_classes_picks_the_val_scenes():
    from nuscenes.utils import splits

    from perception.data.synthetic.generate import _job

    for version, val in (("v1.0-mini", splits.mini_val), ("v1.0-trainval", splits.val)):
        for mode in ("val", "all", "none"):
            config = SynthConfig(version=version, scenes=10, cover_classes=mode)
            names = scene_names(config)
            jobs = {n: _job(config, "/tmp/x", n, n in val).cover_classes for n in names}
            want = {n: mode == "all" or (mode == "val" and n in val) for n in names}
            assert jobs == want, (version, mode)
            assert any(want.values()) == (mode != "none")
    assert SynthConfig().cover_classes == "val"
    with pytest.raises(ValueError, match="cover_classes"):
        SynthConfig(cover_classes="train")


def test_val_scene_has_every_class_and_train_scene_is_the_plain_draw(tiny_dataset, tiny_nusc):
    """TINY's mini_val scene (2 s) holds every detection class where the devkit scores it (with
    LiDAR or radar points); its mini_train scene gets no added groups (its description says)."""
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.utils.splits import mini_val

    per_scene = defaultdict(set)
    for ann in tiny_nusc.sample_annotation:
        name = category_to_detection_name(ann["category_name"])
        if name is not None and ann["num_lidar_pts"] + ann["num_radar_pts"] > 0:
            sample = tiny_nusc.get("sample", ann["sample_token"])
            per_scene[tiny_nusc.get("scene", sample["scene_token"])["name"]].add(name)
    val = [n for n in per_scene if n in mini_val]
    assert len(val) == 1 and len(per_scene) == 2
    assert per_scene[val[0]] == {"car", "truck", "bus", "trailer", "construction_vehicle",
                                 "pedestrian", "motorcycle", "bicycle", "traffic_cone", "barrier"}
    desc = {s["name"]: s["description"] for s in tiny_nusc.scene}
    assert desc[val[0]].endswith("every class in view")
    assert not any(d.endswith("every class in view") for n, d in desc.items() if n != val[0])


def test_split_lists_read_from_source_equal_the_imported_devkit():
    from nuscenes.utils import splits

    from perception.data.synthetic.generate import _split_lists

    assert _split_lists("v1.0-mini") == (splits.mini_train, splits.mini_val)
    assert _split_lists("v1.0-trainval") == (splits.train, splits.val)


def test_generator_processes_do_not_import_torch_or_the_devkit():
    # Each worker process imports the writer; torch or the devkit there costs seconds apiece.
    code = ("import sys; import perception.data.synthetic.generate, perception.data.synthetic.writer; "
            "from perception.data.synthetic.generate import SynthConfig, scene_names; "
            "scene_names(SynthConfig()); "
            "print(sorted(m for m in ('torch', 'nuscenes', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_devkit_loads_all_tables(tiny_dataset, tiny_nusc):
    nusc, cfg = tiny_nusc, tiny_dataset.config
    for t in TABLE_NAMES:
        assert os.path.exists(os.path.join(tiny_dataset.root, cfg.version, f"{t}.json"))
        assert len(getattr(nusc, t)) > 0, t
    assert len(nusc.scene) == 2 and len(nusc.log) == 2 and len(nusc.map) == 2
    assert len(nusc.sensor) == 12 and len(nusc.calibrated_sensor) == 24
    assert len(nusc.attribute) == 8 and len(nusc.visibility) == 4
    assert {c["name"] for c in nusc.category} >= {"vehicle.car", "human.pedestrian.adult"}
    hex32 = re.compile(r"^[0-9a-f]{32}$")
    for t in TABLE_NAMES:
        if t == "visibility":
            assert [v["token"] for v in nusc.visibility] == ["1", "2", "3", "4"]
            continue
        assert all(hex32.match(r["token"]) for r in getattr(nusc, t)), t
    # Every sample has all 12 channels; every sample_data its own ego pose at its own time.
    for s in nusc.sample:
        assert set(s["data"]) == set(ALL_CHANNELS)
    for sd in nusc.sample_data:
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        assert pose["timestamp"] == sd["timestamp"]
        assert sd["fileformat"] == ("jpg" if sd["sensor_modality"] == "camera" else "pcd")
        if sd["sensor_modality"] == "camera":
            assert (sd["width"], sd["height"]) == (cfg.image_width, cfg.image_height)
        else:
            assert (sd["width"], sd["height"]) == (0, 0)
    for m in nusc.map:
        assert m["category"] == "semantic_prior"
        assert os.path.exists(os.path.join(tiny_dataset.root, m["filename"]))
        assert m["mask"].mask().dtype == np.uint8
    for log in nusc.log:
        assert log["map_token"] in {m["token"] for m in nusc.map}
    with open(os.path.join(tiny_dataset.root, "synthetic_config.yaml")) as f:
        resolved = yaml.safe_load(f)
    assert resolved["seed"] == cfg.seed and resolved["scenes"] == 2
    assert resolved["scene_names"] == sorted(s["name"] for s in nusc.scene)


def test_every_file_exists_and_loads(tiny_dataset, tiny_nusc):
    import cv2
    from nuscenes.utils.data_classes import LidarPointCloud

    nusc, root = tiny_nusc, tiny_dataset.root
    for sd in nusc.sample_data:
        path = os.path.join(root, sd["filename"])
        assert os.path.exists(path), sd["filename"]
        folder = "samples" if sd["is_key_frame"] else "sweeps"
        name = f"{folder}/{sd['channel']}/"
        assert sd["filename"].startswith(name)
        assert f"__{sd['channel']}__{sd['timestamp']}." in sd["filename"]
        if sd["sensor_modality"] == "lidar":
            assert path.endswith(".pcd.bin")
            pc = LidarPointCloud.from_file(path)
            assert pc.nbr_points() > 1000
            assert np.all(np.isfinite(pc.points))
        elif sd["sensor_modality"] == "radar":
            assert path.endswith(".pcd")
            pc = _radar_pc(path)
            assert pc.points.shape[0] == 18
        else:
            img = cv2.imread(path)
            assert img is not None and img.shape == (sd["height"], sd["width"], 3)
    # The devkit's own accessors work end to end.
    s = nusc.sample[len(nusc.sample) // 2]
    _, boxes, k = nusc.get_sample_data(s["data"]["CAM_FRONT"])
    assert k.shape == (3, 3)
    nusc.get_sample_data(s["data"]["LIDAR_TOP"])


def test_chains_are_consistent(tiny_nusc):
    nusc = tiny_nusc
    # scene -> samples
    for scene in nusc.scene:
        tokens, tok = [], scene["first_sample_token"]
        while tok:
            s = nusc.get("sample", tok)
            assert s["scene_token"] == scene["token"]
            tokens.append(tok)
            tok = s["next"]
        assert tokens[-1] == scene["last_sample_token"] and len(tokens) == scene["nbr_samples"]
        ts = [nusc.get("sample", t)["timestamp"] for t in tokens]
        assert np.all(np.diff(ts) > 0)
        for a, b in zip(tokens, tokens[1:]):
            assert nusc.get("sample", b)["prev"] == a
    # per channel: prev/next, time order, first and last are keyframes, sweeps -> next keyframe's sample
    for (scene, ch), recs in _channel_records(nusc).items():
        assert recs[0]["prev"] == "" and recs[-1]["next"] == ""
        assert recs[0]["is_key_frame"] and recs[-1]["is_key_frame"]
        for a, b in zip(recs, recs[1:]):
            assert a["next"] == b["token"] and b["prev"] == a["token"]
            assert b["timestamp"] > a["timestamp"]
        next_kf_sample = None
        for r in reversed(recs):
            if r["is_key_frame"]:
                next_kf_sample = r["sample_token"]
                assert nusc.get("sample", r["sample_token"])["data"][ch] == r["token"]
            else:
                assert r["sample_token"] == next_kf_sample
    # instances
    ann_count = 0
    for inst in nusc.instance:
        tok, seen, prev = inst["first_annotation_token"], [], None
        while tok:
            ann = nusc.get("sample_annotation", tok)
            assert ann["instance_token"] == inst["token"]
            if prev is not None:
                # consecutive annotations of an instance are in consecutive samples
                assert nusc.get("sample", ann["sample_token"])["prev"] == prev["sample_token"]
                assert ann["prev"] == prev["token"]
            seen.append(tok)
            prev, tok = ann, ann["next"]
        assert seen[-1] == inst["last_annotation_token"] and len(seen) == inst["nbr_annotations"]
        ann_count += len(seen)
        cats = {nusc.get("sample_annotation", t)["category_name"] for t in seen}
        assert len(cats) == 1
    assert ann_count == len(nusc.sample_annotation)
    for ann in nusc.sample_annotation:
        assert ann["visibility_token"] in {"1", "2", "3", "4"}
        assert len(ann["attribute_tokens"]) <= 1
        w, l, h = ann["size"]
        assert min(w, l, h) > 0
        assert abs(np.linalg.norm(ann["rotation"]) - 1) < 1e-9


def _check_point_counts(nusc, root):
    """num_lidar_pts / num_radar_pts vs the devkit's points_in_box, for every box."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    lidar, radar = {}, defaultdict(int)
    for s in nusc.sample:
        sd = s["data"]["LIDAR_TOP"]
        path, boxes, _ = nusc.get_sample_data(sd)
        pts = LidarPointCloud.from_file(path).points[:3]
        for b in boxes:
            lidar[b.token] = int(points_in_box(b, pts).sum())
        for ch in RADAR_CHANNELS:
            path, boxes, _ = nusc.get_sample_data(s["data"][ch])
            pts = _radar_pc(path).points[:3]
            for b in boxes:
                radar[b.token] += int(points_in_box(b, pts).sum())
    anns = nusc.sample_annotation
    assert len(lidar) == len(anns)
    bad_l = [a["token"] for a in anns if a["num_lidar_pts"] != lidar[a["token"]]]
    bad_r = [a["token"] for a in anns if a["num_radar_pts"] != radar[a["token"]]]
    assert not bad_l, f"{len(bad_l)} of {len(anns)} boxes: num_lidar_pts differs from the devkit"
    assert not bad_r, f"{len(bad_r)} of {len(anns)} boxes: num_radar_pts differs from the devkit"
    return np.array([a["num_lidar_pts"] for a in anns]), np.array([a["num_radar_pts"] for a in anns])


def test_point_counts_equal_devkit(tiny_dataset, tiny_nusc):
    lid, rad = _check_point_counts(tiny_nusc, tiny_dataset.root)
    assert lid.sum() > 0 and rad.sum() > 0


def test_point_counts_equal_devkit_other_seed(tiny_other_seed, tiny_other_seed_nusc):
    _check_point_counts(tiny_other_seed_nusc, tiny_other_seed.root)


def test_detection_eval_gt_as_predictions(tiny_dataset, tiny_nusc, tmp_path):
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.utils.splits import create_splits_scenes

    nusc = tiny_nusc
    val_scenes = set(create_splits_scenes()["mini_val"])
    attr_name = {a["token"]: a["name"] for a in nusc.attribute}
    results, present = {}, set()
    for s in nusc.sample:
        if nusc.get("scene", s["scene_token"])["name"] not in val_scenes:
            continue
        boxes = []
        for tok in s["anns"]:
            ann = nusc.get("sample_annotation", tok)
            name = category_to_detection_name(ann["category_name"])
            # The eval drops GT boxes without any LiDAR/radar point; a prediction there would
            # be a false positive, so the "perfect detector" does not predict them.
            if name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
                continue
            vel = np.nan_to_num(nusc.box_velocity(tok)[:2]).tolist()
            attrs = [attr_name[t] for t in ann["attribute_tokens"]]
            boxes.append({"sample_token": s["token"], "translation": ann["translation"],
                          "size": ann["size"], "rotation": ann["rotation"], "velocity": vel,
                          "detection_name": name, "detection_score": 0.9,
                          "attribute_name": attrs[0] if attrs else ""})
            present.add(name)
        results[s["token"]] = boxes
    assert results and present
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"meta": {"use_camera": False, "use_lidar": True, "use_radar": False,
                                         "use_map": False, "use_external": False},
                                "results": results}))
    ev = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(path), eval_set="mini_val",
                       output_dir=str(tmp_path / "eval"), verbose=False)
    metrics, _ = ev.evaluate()
    aps = metrics.serialize()["mean_dist_aps"]
    evaluated = {c for c in present if len(ev.gt_boxes.all) and
                 any(b.detection_name == c for b in ev.gt_boxes.all)}
    assert evaluated
    tp = metrics.serialize()["label_tp_errors"]
    for c in evaluated:
        assert aps[c] > 0.99, (c, aps[c])
        assert tp[c]["trans_err"] < 1e-6 and tp[c]["scale_err"] < 1e-6, (c, tp[c])


def test_deterministic_and_parallel_equals_serial(tiny_dataset, tiny_serial, tiny_other_seed):
    v = tiny_dataset.config.version
    a, b = _tables(tiny_dataset.root, v), _tables(tiny_serial.root, v)
    for t in TABLE_NAMES:
        assert a[t] == b[t], t
    ha, hb = _file_hashes(tiny_dataset.root), _file_hashes(tiny_serial.root)
    # synthetic_config.yaml records the worker count itself; every other byte must match.
    assert ha.pop("synthetic_config.yaml") != hb.pop("synthetic_config.yaml")
    assert ha == hb
    # another seed: other worlds, other bytes, other tokens (but the same standard tables)
    c = _tables(tiny_other_seed.root, v)
    for t in ("category", "attribute", "visibility", "sensor"):
        assert a[t] == c[t]
    for t in ("sample", "sample_annotation", "ego_pose", "calibrated_sensor", "scene"):
        assert a[t] != c[t], t
    hc = _file_hashes(tiny_other_seed.root)
    lidar_a = {h for k, h in ha.items() if "LIDAR_TOP" in k}
    lidar_c = {h for k, h in hc.items() if "LIDAR_TOP" in k}
    assert not lidar_a & lidar_c


def test_keyframes_only(tiny_dataset, tiny_keyframes_only):
    v = tiny_dataset.config.version
    full, kf = _tables(tiny_dataset.root, v), _tables(tiny_keyframes_only.root, v)
    # The records are those of the full dataset (like a keyframe-only nuScenes download) ...
    for t in TABLE_NAMES:
        assert full[t] == kf[t], t
    # ... only the keyframe files exist, and they are the same bytes.
    hk, hf = _file_hashes(tiny_keyframes_only.root), _file_hashes(tiny_dataset.root)
    assert not any(k.startswith("sweeps") for k in hk)
    assert not os.path.exists(os.path.join(tiny_keyframes_only.root, "sweeps"))
    assert len([k for k in hk if k.startswith("samples")]) == 12 * len(kf["sample"])
    for sd in kf["sample_data"]:
        assert (sd["filename"] in hk) == sd["is_key_frame"]
        if sd["is_key_frame"]:
            assert hk[sd["filename"]] == hf[sd["filename"]]


def test_rates_and_timestamps(tiny_nusc):
    nusc = tiny_nusc
    recs = _channel_records(nusc)
    for scene in nusc.scene:
        lidar_ts = np.array([r["timestamp"] for r in recs[(scene["token"], "LIDAR_TOP")]])
        sample_ts = sorted(s["timestamp"] for s in nusc.sample if s["scene_token"] == scene["token"])
        kf_ts = [r["timestamp"] for r in recs[(scene["token"], "LIDAR_TOP")] if r["is_key_frame"]]
        assert kf_ts == sample_ts                       # a sample's time is its LiDAR keyframe's
        assert 1.95 < (len(sample_ts) - 1) / ((sample_ts[-1] - sample_ts[0]) * 1e-6) < 2.05
        assert 2018 <= np.datetime64(int(sample_ts[0]), "us").astype(object).year <= 2019
        for ch in ALL_CHANNELS:
            ts = np.array([r["timestamp"] for r in recs[(scene["token"], ch)]])
            rate = (len(ts) - 1) / ((ts[-1] - ts[0]) * 1e-6)
            expect = 20.0 if ch == "LIDAR_TOP" else 12.0 if ch in CAMERA_CHANNELS else 13.0
            assert abs(rate - expect) / expect < 0.08, (ch, rate)
            if ch != "LIDAR_TOP":
                assert not set(ts.tolist()) & set(lidar_ts.tolist()), ch
                # keyframe = the capture nearest the sample time, within half a period
                for s in nusc.sample:
                    if s["scene_token"] == scene["token"]:
                        sd = nusc.get("sample_data", s["data"][ch])
                        gaps = np.abs(ts - s["timestamp"])
                        assert gaps.min() == abs(sd["timestamp"] - s["timestamp"])


def test_info_summary_tiny(tiny_dataset, tiny_nusc):
    from perception.data.synthetic import format_summary, summarize

    d = summarize(tiny_dataset.root, tiny_dataset.config.version, nusc=tiny_nusc)
    assert d["scenes"] == 2 and d["samples"] == len(tiny_nusc.sample)
    assert abs(d["rates_hz"]["LIDAR_TOP"] - 20) < 1 and abs(d["rates_hz"]["keyframes"] - 2) < 0.1
    assert d["sample_data"]["CAM_FRONT"]["files"] == d["sample_data"]["CAM_FRONT"]["records"]
    assert d["lidar_points_median"] > 1000 and d["radar_returns_median"] > 0
    assert 0 <= d["radar_clutter_share"] <= 1
    assert sum(d["visibility"].values()) == d["sample_annotation"]
    text = format_summary(d)
    assert "LIDAR_TOP" in text and "clutter" in text


@real_scene.needs_scene
def test_info_summary_real_scene():
    from perception.data.synthetic import summarize

    d = summarize(real_scene.DATAROOT, real_scene.VERSION)
    # The figures of shared/data/README.md.
    assert d["scenes"] == 1 and d["samples"] == 41 and d["sample_annotation"] == 2424
    assert abs(d["lidar_points_median"] - 34_700) < 200
    assert abs(d["radar_returns_median"] - 86) <= 1
    assert abs(d["share_lidar_lt5"] - 0.41) < 0.01 and abs(d["share_lidar_0"] - 0.18) < 0.01
    assert abs(d["share_no_radar"] - 0.71) < 0.01
    assert abs(d["share_visibility_0_40"] - 0.33) < 0.01
    assert abs(d["radar_clutter_share"] - 0.87) < 0.01
    assert abs(d["rates_hz"]["LIDAR_TOP"] - 20) < 0.5
    assert d["sample_data"]["LIDAR_TOP"]["files"] == 41     # keyframe files only


# ------------------------------------------------------------------------------------------------
# Unit checks of the rig and the timeline (no dataset needed)
def test_rig_frames_and_intrinsics():
    from perception.data.synthetic.rig import build_rig

    rig = build_rig(640, 360)
    lidar = rig["LIDAR_TOP"].ego_T_sensor
    np.testing.assert_allclose(lidar[:3, 0], [0, -1, 0], atol=1e-9)   # sensor x = ego right
    np.testing.assert_allclose(lidar[:3, 1], [1, 0, 0], atol=1e-9)    # sensor y = ego forward
    np.testing.assert_allclose(lidar[:3, 3], [0.943713, 0, 1.84023], atol=1e-9)
    yaws = {"CAM_FRONT": 0, "CAM_FRONT_RIGHT": -55, "CAM_BACK_RIGHT": -110, "CAM_BACK": 180,
            "CAM_BACK_LEFT": 110, "CAM_FRONT_LEFT": 55}
    for ch, yaw in yaws.items():
        s = rig[ch]
        axis = s.ego_T_sensor[:3, 2]                       # optical axis in the ego frame
        got = np.degrees(np.arctan2(axis[1], axis[0]))
        assert abs((got - yaw + 180) % 360 - 180) < 1e-6, ch
        assert s.ego_T_sensor[2, 1] < -0.99                # image y points down
        hfov = 2 * np.degrees(np.arctan(320 / s.intrinsics[0, 0]))
        assert abs(hfov - (110 if ch == "CAM_BACK" else 70)) < 1e-6
    front = rig["RADAR_FRONT"].ego_T_sensor
    np.testing.assert_allclose(front[:3, 0], [1, 0, 0], atol=1e-9)
    assert rig["RADAR_BACK_LEFT"].ego_T_sensor[0, 0] < -0.99      # rear radars look backwards
    jittered = build_rig(640, 360, np.random.default_rng(3))
    for s in jittered.sensors:
        assert abs(np.linalg.norm(s.rotation) - 1) < 1e-12 and s.rotation[0] >= 0
        assert np.linalg.norm(s.translation - rig[s.channel].translation) < 0.05
    assert not np.allclose(jittered["CAM_FRONT"].intrinsics, rig["CAM_FRONT"].intrinsics)


def test_timeline_rules():
    from perception.data.synthetic.writer import (CAMERA_CHANNELS, _visibility_token,
                                                  build_timeline, camera_trigger_offset_us)

    offs = [camera_trigger_offset_us(y) for y in (0, -55, -110, 180, 110, 55)]
    assert all(-43_000 < o < 1_000 for o in offs)     # within half a camera period
    assert offs[0] < offs[1] < offs[2] < offs[3] < offs[4]      # the beam sweeps clockwise
    n, tl = build_timeline(np.random.default_rng(0), 20.0, {c: y for c, y in zip(
        CAMERA_CHANNELS, (0, -55, -110, 180, 110, 55))})
    assert n == 40
    for ch, t in tl.items():
        assert t.key.sum() == n and t.key[0] and t.key[-1]
        assert np.all(np.diff(t.t_us) > 0) and t.t_us[0] >= 0 and t.t_us[-1] <= 20_000_000
    assert [_visibility_token(v, 100) for v in (0, 39, 40, 59, 60, 79, 80, 100)] == \
        ["1", "1", "2", "2", "3", "3", "4", "4"]
    assert _visibility_token(0, 0) == "1"


def test_classify_points_matches_devkit_boxes():
    """boxes_in_sensor / classify_points (vectorized) against the devkit's Box moved with
    translate/rotate and its points_in_box, on random poses, boxes and points, some of them
    placed on faces (those must be flagged near_face and left out of every count)."""
    from nuscenes.utils.data_classes import Box
    from nuscenes.utils.geometry_utils import points_in_box
    from pyquaternion import Quaternion

    from perception.data.synthetic.writer import FACE_EPS_M, boxes_in_sensor, classify_points

    rng = np.random.default_rng(3)

    def quat(yaw, tilt=0.0):
        return list(Quaternion(axis=[0, 0, 1], angle=yaw) * Quaternion(axis=[1, 0, 0], angle=tilt))

    for trial in range(5):
        pose = {"translation": list(rng.uniform(-500, 500, 3)), "rotation": quat(rng.uniform(-3, 3), 0.02)}
        calib = {"translation": list(rng.uniform(-2, 2, 3)), "rotation": quat(rng.uniform(-3, 3), 1.5)}
        anns = [{"translation": list(np.asarray(pose["translation"]) + rng.uniform(-30, 30, 3)),
                 "size": list(rng.uniform(0.3, 6.0, 3)), "rotation": quat(rng.uniform(-3, 3))}
                for _ in range(12)]
        boxes = boxes_in_sensor(anns, pose, calib)
        dev = []
        for a in anns:
            b = Box(a["translation"], a["size"], Quaternion(a["rotation"]))
            b.translate(-np.array(pose["translation"]))
            b.rotate(Quaternion(pose["rotation"]).inverse)
            b.translate(-np.array(calib["translation"]))
            b.rotate(Quaternion(calib["rotation"]).inverse)
            dev.append(b)
        np.testing.assert_allclose(boxes.center, [b.center for b in dev], atol=1e-9)
        # Points: around each box, and exactly on one face of it (sensor frame).
        pts = [b.center + rng.uniform(-1, 1, (200, 3)) * b.wlh.max() for b in dev]
        on_face = []
        for k, b in enumerate(dev):
            local = rng.uniform(-0.5, 0.5, (10, 3)) * boxes.half[k] * 2
            local[:, 0] = boxes.half[k, 0]                              # the front face
            on_face.append(boxes.center[k] + local @ boxes.axes[k].T)
        xyz = np.concatenate(pts + on_face)
        near, counts = classify_points(xyz, boxes)
        assert near[-len(anns) * 10:].all()
        kept = xyz[~near]
        expect = [int(points_in_box(b, kept.T).sum()) for b in dev]
        np.testing.assert_array_equal(counts, expect)
        assert (counts > 0).sum() >= 6, "the trial must exercise non-empty boxes"
        # Every point not flagged is more than eps from every face of every box (as the writer
        # relies on): the devkit's count with the box grown or shrunk by eps is the same.
        for b in dev:
            for f in (1 - 2 * FACE_EPS_M / b.wlh.min(), 1 + 2 * FACE_EPS_M / b.wlh.min()):
                assert points_in_box(b, kept.T, wlh_factor=f).sum() == points_in_box(b, kept.T).sum()
