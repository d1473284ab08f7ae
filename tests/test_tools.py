"""The diagnostic tools under tools/ (scripts, loaded from their files)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import torch

from real_scene import DATAROOT, VERSION, needs_scene
from tool_scripts import load_tool


def test_probe_frames_spread_evenly_and_json_is_written_where_asked(tmp_path):
    from perception.engine.probe import spread, write_json

    assert spread(10, 3) == [0, 4, 9]
    assert spread(5, 0) == spread(5, 5) == spread(5, 9) == [0, 1, 2, 3, 4]
    assert spread(3, 2) == [0, 2]
    write_json(None, {"a": 1})
    write_json(tmp_path / "sub" / "r.json", {"a": 1.5})
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == {"a": 1.5}


def test_probe_regression_summary_per_class():
    probe = load_tool("probe_regression")
    nan = float("nan")
    # class 0: a car moving at 10 m/s predicted at 5 m/s, heading flipped; a parked car predicted
    # at 1 m/s; class 1: one object, unknown velocity.
    target = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 10.0, 0.0],
                           [5.0, 5.0, 0.0, 4.0, 2.0, 1.5, 1.0, 0.0, 0.0],
                           [9.0, 9.0, 0.0, 8.0, 2.5, 3.0, 0.5, nan, nan]], dtype=torch.float64)
    pred = target.clone()
    pred[0, 0] += 0.3
    pred[0, 6] = math.pi
    pred[0, 7] = 5.0
    pred[1, 7:9] = torch.tensor([0.6, 0.8], dtype=torch.float64)
    pred[2, 7:9] = 3.0
    rows = probe.summarize(torch.tensor([0, 0, 1]), target, pred, ("car", "truck", "bus"))
    assert set(rows) == {"car", "truck"}
    car, truck = rows["car"], rows["truck"]
    assert car["objects"] == 2 and car["moving"] == 1
    assert math.isclose(car["centre_err_m"], 0.15)
    assert math.isclose(car["heading_flipped_share"], 0.5)
    assert math.isclose(car["vel_err_moving_mps"], 5.0) and math.isclose(car["vel_err_static_mps"], 1.0)
    assert math.isclose(car["speed_ratio_moving_median"], 0.5)
    assert truck["moving"] == 0 and truck["vel_err_moving_mps"] is None
    assert truck["vel_err_static_mps"] is None          # unknown velocity is neither
    assert "| car | 2 | 1 | 0.15 |" in probe.table(rows)
    # A barrier turned round is the same barrier (the devkit's period pi): not flipped.
    rows = probe.summarize(torch.tensor([0, 0, 1]), target, pred, ("barrier", "truck", "bus"))
    assert rows["barrier"]["heading_flipped_share"] == 0.0
    assert rows["barrier"]["heading_err_median_rad"] < 1e-9


def test_probe_regression_matches_each_object_to_its_nearest_strong_detection_of_its_class():
    """--at-detections: nearest detection of the same class scoring >= 0.3 within 2 m; a weak,
    a far or another class's detection is no match; objects outside the grid are left out."""
    from perception.structures import Boxes3D, Detections, GroundTruth
    from perception.structures.grid import BEVGrid

    probe = load_tool("probe_regression")
    grid = BEVGrid(x_range=(-16.0, 16.0), y_range=(-16.0, 16.0), z_range=(-3.0, 1.0),
                   cell_size=0.5, voxel_z=4.0)

    def box(x, y, yaw=0.0):
        return [x, y, -1.0, 4.0, 2.0, 1.5, yaw, 0.0, 0.0]

    gt = GroundTruth(Boxes3D(torch.tensor([box(0, 0), box(10, 0), box(0, 10), box(30, 0)])),
                     torch.tensor([0, 0, 1, 0]))
    dets = Detections(Boxes3D(torch.tensor([
        box(0.5, 0, math.pi),      # car 0's match: flipped, 0.5 m off
        box(0.2, 0.1),             # nearer, but weak
        box(11.5, 0),              # car at 10: 1.5 m, strong
        box(10.3, 0),              # nearer to car at 10, but a truck
        box(0, 12.5),              # truck at (0, 10): 2.5 m, too far
        box(30, 0)])),             # at the object outside the grid
        scores=torch.tensor([0.5, 0.2, 0.9, 0.9, 0.9, 0.9]),
        labels=torch.tensor([0, 0, 0, 1, 1, 0]))
    labels, target, pred = probe.match_detections(gt, dets, grid)
    assert labels.tolist() == [0, 0]
    torch.testing.assert_close(target[:, :2], torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
    torch.testing.assert_close(pred[:, :2], torch.tensor([[0.5, 0.0], [11.5, 0.0]]))
    rows = probe.summarize(labels, target.double(), pred.double(), ("car", "truck"))
    assert rows["car"]["objects"] == 2 and math.isclose(rows["car"]["heading_flipped_share"], 0.5)
    # No detection at all: nothing matched, nothing raised.
    none = Detections(Boxes3D(torch.zeros(0, 9)), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert len(probe.match_detections(gt, none, grid)[0]) == 0


def test_probe_depth_summary():
    probe = load_tool("probe_depth")
    centres = torch.tensor([1.5, 2.5, 3.5, 4.5])
    targets = torch.tensor([0, 3, 3, 1])
    sure = torch.full((4, 4), -30.0)
    sure[torch.arange(4), targets] = 30.0
    r = probe.summarize(sure, targets, centres)
    assert r["pixels"] == 4 and r["argmax_exact"] == 1.0 and r["ce"] < 1e-9
    assert r["mean_abs_err_m"] < 1e-9 and r["delta_1_25"] == 1.0
    flat = probe.summarize(torch.zeros(4, 4), targets, centres)    # uniform: mean depth 3.0 m
    assert math.isclose(flat["ce"], math.log(4)) and math.isclose(flat["uniform_ce"], math.log(4))
    assert math.isclose(flat["mean_abs_err_m"], (1.5 + 1.5 + 1.5 + 0.5) / 4)
    assert math.isclose(flat["abs_rel"], (1.5 / 1.5 + 1.5 / 4.5 + 1.5 / 4.5 + 0.5 / 2.5) / 4)
    # 3.0 vs 2.5 is within 25 %, 3.0 vs 1.5 and 4.5 are not.
    assert flat["delta_1_25"] == 0.25
    off = sure.roll(2, dims=1)          # the most likely bin two away from the target
    assert probe.summarize(off, targets, centres)["argmax_within_2_bins"] == 1.0
    assert probe.summarize(off, targets, centres)["argmax_exact"] == 0.0


def test_probe_pixels_summary():
    probe = load_tool("probe_pixels")
    # background, a car (class 1) seen at relative yaw 0, a car at 170 deg predicted at -10.
    classes = torch.tensor([0, 1, 1])
    yaw = torch.tensor([[0.0, 0.0], [0.0, 1.0],
                        [math.sin(math.radians(170)), math.cos(math.radians(170))]])
    logits = torch.zeros(3, 1 + 10 + 2)
    logits[0, 0] = logits[1, 1] = 5.0
    logits[2, 4] = 5.0                                   # the second car called class 3
    logits[:, -2:] = torch.tensor([[0.0, 1.0], [0.0, 1.0],
                                   [math.sin(math.radians(-10)), math.cos(math.radians(-10))]])
    r = probe.summarize(logits, classes, yaw)
    assert r["pixels"] == 3 and r["object_pixels"] == 2
    assert math.isclose(r["class_accuracy"], 2 / 3) and r["object_class_accuracy"] == 0.5
    assert r["heading_within_45"] == 0.5 and r["heading_turned"] == 0.5
    assert math.isclose(r["heading_median_deg"], 0.0, abs_tol=1e-4)  # lower median of 0, 180


@needs_scene
def test_probe_velocity_on_the_real_scene(tmp_path, capsys):
    """scene-0916's ground truth as detections: with their velocities, every heading within 0.5
    rad, none turned round and no velocity error; with the static ones turned round, the static
    column says so and the moving one does not; against a copy with velocities zeroed, the
    moving boxes' error is their speed before and 0 after."""
    from nuscenes import NuScenes
    from nuscenes.eval.common.loaders import load_gt
    from nuscenes.eval.detection.data_classes import DetectionBox
    from pyquaternion import Quaternion

    probe = load_tool("probe_velocity")
    half_turn = Quaternion(axis=[0.0, 0.0, 1.0], angle=math.pi)
    gt = load_gt(NuScenes(version=VERSION, dataroot=str(DATAROOT), verbose=False), "mini_val",
                 DetectionBox, verbose=False)
    right, zeroed = {}, {}
    for token in gt.sample_tokens:
        rows = [{"sample_token": token, "translation": list(b.translation), "size": list(b.size),
                 "rotation": list(b.rotation), "velocity": list(b.velocity),
                 "detection_name": b.detection_name, "detection_score": 0.9,
                 "attribute_name": b.attribute_name} for b in gt[token]]
        right[token] = rows
        zeroed[token] = [{**r, "velocity": [0.0, 0.0]} for r in rows]
    paths = []
    for name, results in (("right", right), ("zeroed", zeroed)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({"meta": {}, "results": results}))
    common = ["--dataroot", str(DATAROOT), "--version", VERSION, "--split", "mini_val"]
    assert probe.main([str(paths[0]), *common]) == 0
    heading = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert heading["car"][3] == "1.00" and heading["pedestrian"][3] == "1.00"
    assert heading["car"][-1] == "0.00"                           # no static car turned round
    # The parked and stopped boxes turned round: only the static column sees it.
    turned = {token: [{**r, "rotation": list(Quaternion(r["rotation"]) * half_turn)}
                      if np.hypot(*np.nan_to_num(r["velocity"])) <= 1.0 else r for r in rows]
              for token, rows in right.items()}
    (tmp_path / "turned.json").write_text(json.dumps({"meta": {}, "results": turned}))
    assert probe.main([str(tmp_path / "turned.json"), *common]) == 0
    heading = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert heading["car"][-1] == "1.00" and heading["car"][7] == "0.00"  # static / moving
    assert probe.main([str(paths[1]), str(paths[0]), *common]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    moving = {r[0]: r for r in rows if r[1] == "moving"}
    assert "bus" in moving and float(moving["bus"][6]) > 1.0     # before: mean error = speed
    assert all(r[10] == "0.00" for r in moving.values())          # after: mean error 0
    # Files whose detections differ are refused.
    zeroed[next(iter(zeroed))] = []
    paths[1].write_text(json.dumps({"meta": {}, "results": zeroed}))
    assert probe.main([str(paths[1]), str(paths[0]), *common]) == 2


@needs_scene
def test_confusions_on_the_real_scene(tmp_path, capsys):
    """scene-0916's ground truth as detections: every box found as itself, no false positive;
    the cars relabelled as trucks: each car taken for a truck, and each of those trucks a
    false one beside a car (distance 0); an unknown class is refused."""
    from nuscenes import NuScenes
    from nuscenes.eval.common.loaders import load_gt
    from nuscenes.eval.detection.data_classes import DetectionBox

    tool = load_tool("confusions")
    gt = load_gt(NuScenes(version=VERSION, dataroot=str(DATAROOT), verbose=False), "mini_val",
                 DetectionBox, verbose=False)
    rows = {token: [{"sample_token": token, "translation": list(b.translation),
                     "size": list(b.size), "rotation": list(b.rotation),
                     "velocity": list(b.velocity), "detection_name": b.detection_name,
                     "detection_score": 0.9, "attribute_name": b.attribute_name}
                    for b in gt[token] if b.num_pts > 0]      # the metrics drop those without
                for token in gt.sample_tokens}
    common = ["--dataroot", str(DATAROOT), "--version", VERSION, "--split", "mini_val"]
    right = tmp_path / "right.json"
    right.write_text(json.dumps({"meta": {}, "results": rows}))
    assert tool.main([str(right), *common, "--class", "car", "--class", "pedestrian"]) == 0
    out = capsys.readouterr().out.splitlines()
    n_car = int(out[0].split()[1])
    assert n_car > 0
    assert out[0].endswith(f": car {n_car}") and ", 0 with no car within 2 m" in out[1]
    assert out[1].endswith("ground truth within 6 m: -")
    relabelled = {}
    for token, boxes in rows.items():
        relabelled[token] = [{**b, "detection_name": "truck"} if b["detection_name"] == "car"
                             else b for b in boxes]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"meta": {}, "results": relabelled}))
    assert tool.main([str(wrong), *common, "--class", "car", "--class", "truck"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f": truck {n_car}")                  # every car taken for a truck
    assert f", {n_car} with no truck within 2 m" in out[3]
    assert out[3].endswith(f"ground truth within 6 m: car {n_car}")
    assert tool.main([str(wrong), *common, "--class", "bus_stop"]) == 2
    assert "unknown class 'bus_stop'" in capsys.readouterr().err


@needs_scene
def test_temporal_results_on_the_real_scene(tmp_path, capsys):
    """scene-0916's ground truth as detections with velocities zeroed: the tool gives the moving
    boxes their velocity back from the keyframe-to-keyframe displacement (the parked ones stay
    at 0), and names a sample the file lacks."""
    from nuscenes import NuScenes
    from nuscenes.eval.common.loaders import load_gt
    from nuscenes.eval.detection.data_classes import DetectionBox

    tool = load_tool("temporal_results")
    gt = load_gt(NuScenes(version=VERSION, dataroot=str(DATAROOT), verbose=False), "mini_val",
                 DetectionBox, verbose=False)
    results = {token: [{"sample_token": token, "translation": list(b.translation),
                        "size": list(b.size), "rotation": list(b.rotation),
                        "velocity": [0.0, 0.0], "detection_name": b.detection_name,
                        "detection_score": 0.9, "attribute_name": b.attribute_name}
                       for b in gt[token]] for token in gt.sample_tokens}
    path = tmp_path / "zeroed.json"
    path.write_text(json.dumps({"meta": {}, "results": results}))
    common = ["--dataroot", str(DATAROOT), "--version", VERSION, "--split", "mini_val",
              "--metrics", "none"]
    # Also with --confirm (a slow motion needs a third keyframe): the same, a few boxes fewer.
    for name, extra in (("out", []), ("o2", ["--confirm", "2.0"])):
        assert tool.main([str(path), "--out", str(tmp_path / name), *extra, *common]) == 0
        assert int(capsys.readouterr().out.split()[0]) >= 100
        out = json.loads((tmp_path / name / "results_nusc.json").read_text())["results"]
        errors, parked_touched = [], 0
        for token in gt.sample_tokens:
            for box, row in zip(gt[token], out[token]):
                truth = np.nan_to_num(np.asarray(box.velocity, dtype=float))
                if np.hypot(*truth) < 0.5:
                    parked_touched += row["velocity"] != [0.0, 0.0]
                elif row["velocity"] != [0.0, 0.0]:
                    errors.append(float(np.hypot(*(np.asarray(row["velocity"]) - truth))))
        assert parked_touched == 0 and len(errors) >= 100 and np.mean(errors) < 0.3
    # With --face-motion (model.face_motion, the step after): every box given 1 m/s or more
    # (pedestrians 0.3) faces its velocity, where without it some vehicles keep a heading up to
    # 90 degrees off their motion (the step only turns round what drives backwards).
    from pyquaternion import Quaternion

    def off_motion(rows):
        moving = [r for r in rows if np.hypot(*r["velocity"]) >= 1.0]
        return moving, [abs(math.remainder(Quaternion(r["rotation"]).yaw_pitch_roll[0]
                                           - math.atan2(r["velocity"][1], r["velocity"][0]),
                                           2 * math.pi)) for r in moving]

    assert tool.main([str(path), "--out", str(tmp_path / "o5"), "--face-motion", *common]) == 0
    faced = json.loads((tmp_path / "o5" / "results_nusc.json").read_text())["results"]
    moving, off = off_motion([r for rows in faced.values() for r in rows])
    assert len(moving) >= 100 and max(off) < 1e-6
    _, off = off_motion([r for rows in out.values() for r in rows])
    assert max(off) > 0.01
    # The score step alone: a box seen again in the previous keyframe scores higher, velocities
    # stay zero; the first keyframe is untouched.
    assert tool.main([str(path), "--out", str(tmp_path / "o3"), "--no-velocity",
                      "--score-weight", "0.5", *common]) == 0
    out = json.loads((tmp_path / "o3" / "results_nusc.json").read_text())["results"]
    first, second = gt.sample_tokens[0], gt.sample_tokens[1]
    assert all(r["detection_score"] == 0.9 for r in out[first])
    raised = [r["detection_score"] for r in out[second] if r["detection_score"] != 0.9]
    assert len(raised) >= 10 and all(x == pytest.approx(1 - 0.1 * (1 - 0.5 * 0.9)) for x in raised)
    assert all(r["velocity"] == [0.0, 0.0] for rows in out.values() for r in rows)
    # The still step alone: the standing cars, trucks and buses, given 2 m/s and "moving", get
    # 0 and "vehicle.parked" back (those paired with the previous keyframe); the moving ones
    # keep their annotated velocity.
    still_in = {}
    for token in gt.sample_tokens:
        still_in[token] = []
        for box in gt[token]:
            row = {"sample_token": token, "translation": list(box.translation),
                   "size": list(box.size), "rotation": list(box.rotation),
                   "velocity": [float(v) for v in np.nan_to_num(box.velocity)],
                   "detection_name": box.detection_name, "detection_score": 0.9,
                   "attribute_name": box.attribute_name}
            if box.detection_name in ("car", "truck", "bus") and np.hypot(*row["velocity"]) < 0.2:
                row["velocity"], row["attribute_name"] = [2.0, 0.0], "vehicle.moving"
            still_in[token].append(row)
    path.write_text(json.dumps({"meta": {}, "results": still_in}))
    assert tool.main([str(path), "--out", str(tmp_path / "o4"), "--no-velocity", "--still",
                      *common]) == 0
    out = json.loads((tmp_path / "o4" / "results_nusc.json").read_text())["results"]
    faked = stilled = 0
    for token in gt.sample_tokens[1:]:
        for before, after in zip(still_in[token], out[token]):
            if before["velocity"] == [2.0, 0.0]:
                faked += 1
                if after["velocity"] == [0.0, 0.0]:
                    stilled += 1
                    assert after["attribute_name"] == "vehicle.parked"
            else:
                assert after == before
    assert faked > 100 and stilled >= 0.9 * faked
    del results[gt.sample_tokens[3]]
    path.write_text(json.dumps({"meta": {}, "results": results}))
    assert tool.main([str(path), "--out", str(tmp_path / "o2"), *common]) == 2
    assert gt.sample_tokens[3] in capsys.readouterr().err


def test_standstill_results_stops_the_slow_and_moves_the_fast(tmp_path, capsys):
    """The rule on a hand-built file: a parked bus the network gave 0.2 m/s and "moving" stands,
    a car at 9 m/s called parked moves, a slow cycle keeps its rider, a barrier keeps its
    speed; --speeds changes where the line lies; bad input is named."""
    tool = load_tool("standstill_results")

    def row(name, vel, attr):
        return {"sample_token": "s0", "translation": [10.0, 5.0, 1.0], "size": [2.0, 4.5, 1.6],
                "rotation": [0.9238795, 0.0, 0.0, 0.3826834], "velocity": vel,
                "detection_name": name, "detection_score": 0.8, "attribute_name": attr}

    rows = [row("bus", [0.2, 0.0], "vehicle.moving"), row("car", [0.0, -9.0], "vehicle.parked"),
            row("bicycle", [0.3, 0.3], "cycle.with_rider"), row("barrier", [0.4, 0.0], ""),
            row("pedestrian", [0.3, 0.3], "pedestrian.standing")]
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"meta": {}, "results": {"s0": rows, "s1": []}}))
    common = ["--dataroot", "unused", "--version", "v1.0-mini", "--split", "mini_val",
              "--metrics", "none"]
    assert tool.main([str(path), "--out", str(tmp_path / "a"), *common]) == 0
    assert capsys.readouterr().out.startswith("4 changes")
    out = json.loads((tmp_path / "a" / "results_nusc.json").read_text())["results"]["s0"]
    assert [(r["velocity"], r["attribute_name"]) for r in out] == [
        ([0.0, 0.0], "vehicle.parked"), ([0.0, -9.0], "vehicle.moving"),
        ([0.0, 0.0], "cycle.with_rider"), ([0.4, 0.0], ""), ([0.3, 0.3], "pedestrian.moving")]
    assert [r["rotation"] for r in out] == [r["rotation"] for r in rows]
    # Pedestrians from 0.5 m/s: the one at 0.42 m/s now stands (its attribute was standing).
    assert tool.main([str(path), "--out", str(tmp_path / "b"), "--speeds", "1,1,0.5",
                      *common]) == 0
    out = json.loads((tmp_path / "b" / "results_nusc.json").read_text())["results"]["s0"]
    assert (out[4]["velocity"], out[4]["attribute_name"]) == ([0.0, 0.0], "pedestrian.standing")
    # --face-motion: the car at 9 m/s along -y turns to face it (yaw -pi/2; already a change,
    # of attribute); the pedestrian already faces its motion (yaw pi/4), the standing bus keeps
    # its heading.
    capsys.readouterr()
    assert tool.main([str(path), "--out", str(tmp_path / "f"), "--face-motion", *common]) == 0
    assert capsys.readouterr().out.startswith("4 changes")
    out = json.loads((tmp_path / "f" / "results_nusc.json").read_text())["results"]["s0"]
    assert out[1]["rotation"] == pytest.approx([math.sqrt(0.5), 0.0, 0.0, -math.sqrt(0.5)])
    kept = [0, 2, 3, 4]
    assert [out[i]["rotation"] for i in kept] == [rows[i]["rotation"] for i in kept]
    assert tool.main([str(path), "--out", str(tmp_path / "c"), "--speeds", "1,1", *common]) == 2
    assert "need three speeds" in capsys.readouterr().err
    rows[1]["attribute_name"] = "vehicle.flying"
    path.write_text(json.dumps({"meta": {}, "results": {"s0": rows}}))
    assert tool.main([str(path), "--out", str(tmp_path / "d"), *common]) == 2
    assert "sample s0: unknown attribute_name ['vehicle.flying']" in capsys.readouterr().err
