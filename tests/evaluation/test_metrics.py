"""The fast detection metrics against the devkit's DetectionEval, number by number.

Every comparison covers the whole serialized summary (what metrics_summary.json holds) except
eval_time, which is a wall-clock reading; NaN must meet NaN. Tolerance 1e-9 as promised, though
in practice the numbers agree to the bit.
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nuscenes.eval.common.data_classes import EvalBoxes
from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt, load_prediction
from nuscenes.eval.detection.constants import DETECTION_NAMES
from nuscenes.eval.detection.data_classes import DetectionBox
from nuscenes.eval.detection.evaluate import DetectionEval

from perception.evaluation import (MetricsMismatchError, compare_summaries, compute_metrics, evaluate,
                                   from_eval_boxes, get_config, load_ground_truth, results_to_arrays)
from perception.evaluation.metrics import quaternion_yaw
from perception.evaluation.results import filter_boxes
from real_scene import DATAROOT, VERSION, require_scene

TOL = 1e-9
CFG = get_config()


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def devkit_metrics(gt: EvalBoxes, pred: EvalBoxes, cfg=CFG):
    """DetectionEval.evaluate (the devkit's own loop) on in-memory, already filtered boxes."""
    ev = object.__new__(DetectionEval)
    ev.gt_boxes, ev.pred_boxes, ev.cfg, ev.verbose = gt, pred, cfg, False
    metrics, md_list = ev.evaluate()
    return metrics.serialize(), md_list


def fast_metrics(gt: EvalBoxes, pred: EvalBoxes, cfg=CFG):
    return compute_metrics(from_eval_boxes(gt), from_eval_boxes(pred), cfg)


def assert_same(gt: EvalBoxes, pred: EvalBoxes, cfg=CFG):
    ours, our_md = fast_metrics(gt, pred, cfg)
    theirs, their_md = devkit_metrics(gt, pred, cfg)
    assert compare_summaries(ours, theirs, TOL) == []
    # The curves too (metrics_details.json), so that plots drawn from them agree.
    assert compare_summaries({f"{k}": v.serialize() for k, v in our_md.items()},
                             {f"{k}": v.serialize() for k, v in their_md.md.items()}, TOL) == []
    return ours


def yaw_quat(yaw: float) -> tuple:
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


def box(token, name, xy, score=-1.0, attr="", size=(1.0, 2.0, 1.5), yaw=0.0, vel=(0.0, 0.0)):
    return DetectionBox(sample_token=token, translation=(float(xy[0]), float(xy[1]), 0.5),
                        size=tuple(float(s) for s in size), rotation=yaw_quat(yaw),
                        velocity=tuple(float(v) for v in vel), detection_name=name,
                        detection_score=float(score), attribute_name=attr)


def eval_boxes(per_sample: dict) -> EvalBoxes:
    eb = EvalBoxes()
    for token, boxes in per_sample.items():
        eb.add_boxes(token, boxes)
    return eb


# ----------------------------------------------------------------------------------------------
# hand-made edge cases
# ----------------------------------------------------------------------------------------------
def test_equal_distances_and_score_ties():
    # Pred at (1, 0) is exactly 1 m from both GT boxes; equal scores everywhere.
    gt = eval_boxes({"s0": [box("s0", "car", (0, 0)), box("s0", "car", (2, 0))],
                     "s1": [box("s1", "car", (5, 5))]})
    pred = eval_boxes({"s1": [box("s1", "car", (5, 5.5), 0.5)],
                       "s0": [box("s0", "car", (1, 0), 0.5), box("s0", "car", (1, 0), 0.5),
                              box("s0", "car", (0, 0.5), 0.5)]})
    assert_same(gt, pred)


def test_distance_exactly_at_threshold_is_no_match():
    gt = eval_boxes({"s0": [box("s0", "pedestrian", (0, 0), attr="pedestrian.moving")]})
    pred = eval_boxes({"s0": [box("s0", "pedestrian", (0.5, 0), 0.9, "pedestrian.moving"),
                              box("s0", "pedestrian", (0, 4.0), 0.8)]})
    assert_same(gt, pred)


def test_no_ground_truth_no_predictions_no_matches():
    gt = eval_boxes({"s0": [box("s0", "barrier", (0, 0)), box("s0", "traffic_cone", (3, 0))],
                     "s1": []})
    pred = eval_boxes({"s0": [box("s0", "car", (0, 0), 0.3), box("s0", "traffic_cone", (30, 0), 0.3)],
                       "s1": []})
    s = assert_same(gt, pred)
    assert math.isnan(s["label_tp_errors"]["traffic_cone"]["orient_err"])


def test_all_nan_velocities_and_missing_attributes():
    gt = eval_boxes({"s0": [box("s0", "car", (0, 0), vel=(np.nan, np.nan)),
                            box("s0", "bicycle", (9, 0), attr="cycle.with_rider", vel=(np.nan, 1.0))]})
    pred = eval_boxes({"s0": [box("s0", "car", (0.2, 0), 0.9, "vehicle.moving"),
                              box("s0", "bicycle", (9, 0.1), 0.8, "cycle.without_rider")]})
    assert_same(gt, pred)


def test_500_predictions_in_one_sample():
    rng = np.random.default_rng(1)
    gt = eval_boxes({"s0": [box("s0", "car", rng.uniform(-20, 20, 2)) for _ in range(60)]})
    pred = eval_boxes({"s0": [box("s0", "car", rng.uniform(-20, 20, 2), round(rng.random(), 1))
                              for _ in range(500)]})
    assert_same(gt, pred)


def test_500_box_cap_like_load_prediction(tmp_path):
    def results(n):
        boxes = [box("s0", "car", (i, 0), 0.5).serialize() for i in range(n)]
        return {"meta": {}, "results": {"s0": boxes}}

    assert len(results_to_arrays(results(500)["results"], 500)) == 500
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results(501)))
    with pytest.raises(AssertionError):
        load_prediction(str(path), 500, DetectionBox)
    with pytest.raises(ValueError, match="<= 500"):
        results_to_arrays(results(501)["results"], 500)


def test_results_loader_matches_devkit_deserialize(tmp_path):
    rng = np.random.default_rng(2)
    res = {f"s{i}": [box(f"s{i}", DETECTION_NAMES[rng.integers(10)], rng.uniform(-9, 9, 2),
                         float(rng.random()), "", yaw=float(rng.uniform(-3, 3))).serialize()
                     for _ in range(rng.integers(0, 5))] for i in range(6)}
    res["s3"][:0] = [dict(res["s0"][0], num_pts=0)] if res["s0"] else []
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"meta": {}, "results": res}))
    theirs = from_eval_boxes(load_prediction(str(path), 500, DetectionBox)[0])
    ours = results_to_arrays(res, 500)
    for field in ("sample", "label", "translation", "size", "rotation", "velocity", "score",
                  "attribute", "num_pts"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field))
    assert ours.sample_tokens == theirs.sample_tokens


def test_quaternion_yaw_matches_pyquaternion():
    from nuscenes.eval.common.utils import quaternion_yaw as devkit_yaw
    from pyquaternion import Quaternion
    rng = np.random.default_rng(3)
    q = np.concatenate([rng.normal(size=(300, 4)), [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]])
    q[:100] /= np.linalg.norm(q[:100], axis=1, keepdims=True)
    expected = np.array([devkit_yaw(Quaternion(v)) for v in q])
    np.testing.assert_allclose(quaternion_yaw(q), expected, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# property tests
# ----------------------------------------------------------------------------------------------
# A few classes only (the others have no GT), the two with TP exceptions among them; coordinates
# on a 0.5 m grid and scores from a short list, so that equal distances, distances exactly at a
# threshold and score ties are common.
CLASSES = ["car", "pedestrian", "barrier", "traffic_cone", "bicycle"]
ATTRS = {"car": ["vehicle.moving", "vehicle.parked", ""], "pedestrian": ["pedestrian.moving", ""],
         "bicycle": ["cycle.with_rider", "cycle.without_rider"], "barrier": [""], "traffic_cone": [""]}
SCORES = [0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 1.0]


@st.composite
def scenes(draw):
    n_samples = draw(st.integers(1, 4))
    tokens = [f"tok{i}" for i in range(n_samples)]
    coord = st.integers(-8, 8).map(lambda v: v * 0.5)
    gt, pred = {}, {}
    for tok in tokens:
        gts = []
        for _ in range(draw(st.integers(0, 6))):
            name = draw(st.sampled_from(CLASSES[:4]))        # no bicycle GT: a class without GT
            vel = draw(st.sampled_from([(0.0, 0.0), (1.0, -0.5), (np.nan, np.nan)]))
            gts.append(box(tok, name, (draw(coord), draw(coord)), attr=draw(st.sampled_from(ATTRS[name])),
                           size=draw(st.sampled_from([(1, 2, 1.5), (0.5, 0.5, 1.8), (2, 4.5, 1.6)])),
                           yaw=draw(st.sampled_from([0.0, 1.0, -3.0, 3.1])), vel=vel))
        preds = []
        for _ in range(draw(st.integers(0, 8))):
            if gts and draw(st.booleans()):                  # near a GT box: offsets on the grid
                ref = draw(st.sampled_from(gts))
                name = ref.detection_name if draw(st.integers(0, 4)) else draw(st.sampled_from(CLASSES))
                xy = (ref.translation[0] + draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0])),
                      ref.translation[1] + draw(st.sampled_from([0.0, -0.5, 1.5])))
            else:
                name, xy = draw(st.sampled_from(CLASSES)), (draw(coord), draw(coord))
            preds.append(box(tok, name, xy, draw(st.sampled_from(SCORES)),
                             attr=draw(st.sampled_from(ATTRS[name])),
                             size=draw(st.sampled_from([(1, 2, 1.5), (1.2, 1.9, 1.4)])),
                             yaw=draw(st.sampled_from([0.0, 0.5, -2.0, 3.14])),
                             vel=draw(st.sampled_from([(0.0, 0.0), (0.5, 0.5)]))))
        gt[tok] = gts
        pred[tok] = preds
    # Predictions may list samples in another order than the ground truth.
    order = draw(st.permutations(tokens))
    return eval_boxes(gt), eval_boxes({t: pred[t] for t in order})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_property_same_as_devkit(data):
    gt, pred = data
    assert_same(gt, pred)


# ----------------------------------------------------------------------------------------------
# synthetic set of realistic size
# ----------------------------------------------------------------------------------------------
def test_synthetic_set_same_as_devkit():
    from perception.evaluation.bench import make_eval_set, to_eval_boxes
    gt, pred = make_eval_set(samples=40, preds_per_sample=150, seed=4)
    ours, _ = compute_metrics(gt, pred, CFG)
    theirs, _ = devkit_metrics(to_eval_boxes(gt), to_eval_boxes(pred))
    assert compare_summaries(ours, theirs, TOL) == []
    assert 0 < ours["mean_ap"] < 1


# ----------------------------------------------------------------------------------------------
# the real scene (nuScenes scene-0916, v1.0-mini / mini_val)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["real", "synthetic"])
def nusc(request, tmp_path_factory):
    """The real scene, and a small world from `perception synth` (2 scenes, one in mini_val):
    every dataset-level test runs on both."""
    from nuscenes import NuScenes

    if request.param == "synthetic":
        from perception.data.synthetic import SynthConfig, generate

        root = tmp_path_factory.mktemp("synth_eval")
        generate(root, SynthConfig(scenes=2, duration_s=4.0, image_width=160, image_height=90,
                                   workers=1, seed=21, actor_density=1.5), verbose=False)
        return NuScenes("v1.0-mini", str(root), verbose=False)
    require_scene()
    return NuScenes(VERSION, str(DATAROOT), verbose=False)


@pytest.fixture(scope="module")
def perturbed_results(nusc):
    """Ground truth, jittered and thinned, plus clutter: a detector-like results dict."""
    gt = load_gt(nusc, "mini_val", DetectionBox)
    rng = np.random.default_rng(0)
    results = {}
    for tok in gt.sample_tokens:
        out = []
        for b in gt[tok]:
            if rng.random() < 0.15:
                continue
            vel = (0.0, 0.0) if np.isnan(b.velocity).any() else tuple(b.velocity)
            attr = b.attribute_name
            if attr and rng.random() < 0.2:
                attr = ""
            out.append(box(tok, b.detection_name, np.array(b.translation[:2]) + rng.normal(0, 0.7, 2),
                           round(float(rng.random()), 2), attr,
                           size=np.array(b.size) * rng.uniform(0.8, 1.2, 3),
                           yaw=float(rng.normal(0, 0.3)), vel=np.array(vel) + rng.normal(0, 0.5, 2)
                           ).serialize())
        center = np.array(gt[tok][0].translation[:2])
        for _ in range(25):
            out.append(box(tok, DETECTION_NAMES[rng.integers(10)], center + rng.normal(0, 20, 2),
                           round(float(rng.random()), 2)).serialize())
        # Bicycles parked in the scene's bike racks: at a rack's center (inside), near its long
        # end (inside or out depending on the rack's heading) and 3 m off (outside).
        for ann in nusc.get("sample", tok)["anns"]:
            rec = nusc.get("sample_annotation", ann)
            if rec["category_name"] == "static_object.bicycle_rack":
                c = np.array(rec["translation"][:2])
                for name, off in (("bicycle", (0, 0)), ("motorcycle", (0.45 * rec["size"][1], 0)),
                                  ("bicycle", (3.0, 0))):
                    out.append(box(tok, name, c + off, round(float(rng.random()), 2),
                                   "cycle.without_rider").serialize())
        results[tok] = out
    return {"meta": {"use_camera": False, "use_lidar": True, "use_radar": False,
                     "use_map": False, "use_external": False}, "results": results}


def test_ground_truth_loader_matches_load_gt(nusc):
    theirs = from_eval_boxes(load_gt(nusc, "mini_val", DetectionBox))
    ours = load_ground_truth(nusc, theirs.sample_tokens)
    for field in ("sample", "label", "translation", "size", "rotation", "velocity", "score",
                  "attribute", "num_pts"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field), err_msg=field)


def test_filters_match_devkit(nusc, perturbed_results):
    for kind in ("gt", "pred"):
        if kind == "gt":
            eb = load_gt(nusc, "mini_val", DetectionBox)
        else:
            eb = EvalBoxes.deserialize(perturbed_results["results"], DetectionBox)
        before = from_eval_boxes(eb)
        eb = filter_eval_boxes(nusc, add_center_dist(nusc, eb), CFG.class_range)
        theirs = from_eval_boxes(eb)
        ours = filter_boxes(nusc, before, CFG.class_range)
        assert len(ours) < len(before)
        np.testing.assert_array_equal(ours.translation, theirs.translation)
        np.testing.assert_array_equal(ours.sample, theirs.sample)


def test_bike_rack_filter_is_exercised(nusc, perturbed_results):
    # scene-0916 has bicycle racks with parked bicycles: some predictions must go for that reason.
    if not any(a["category_name"] == "static_object.bicycle_rack" for a in nusc.sample_annotation):
        pytest.skip("no bicycle rack in this dataset (the real scene has them)")
    pred = results_to_arrays(perturbed_results["results"], 500)
    no_racks = filter_boxes(nusc, pred, CFG.class_range, racks={})
    with_racks = filter_boxes(nusc, pred, CFG.class_range)
    assert len(with_racks) < len(no_racks)


def test_real_scene_check_backend(nusc, perturbed_results, tmp_path):
    ours = evaluate(perturbed_results, None, "v1.0-mini", "mini_val", tmp_path, backend="check", nusc=nusc)
    theirs = json.loads((tmp_path / "devkit" / "metrics_summary.json").read_text())
    written = json.loads((tmp_path / "metrics_summary.json").read_text())
    assert compare_summaries(written, theirs, TOL) == []
    assert compare_summaries(ours, theirs, TOL) == []
    assert list(written) == list(theirs)                          # same keys, same order
    details = [json.loads((d / "metrics_details.json").read_text()) for d in (tmp_path, tmp_path / "devkit")]
    assert compare_summaries(*details, TOL) == []
    assert 0.05 < ours["mean_ap"] < 1 and 0 < ours["nd_score"] < 1
    # A class without ground truth scores AP 0 and TP errors 1: 4 of the 10 in the real scene;
    # none in the synthetic one, whose val scene shows every class (SynthConfig.cover_classes).
    absent = [c for c, v in ours["mean_dist_aps"].items() if v == 0]
    assert all(ours["label_tp_errors"][c]["trans_err"] == 1 for c in absent)
    if nusc.dataroot == str(DATAROOT):
        assert len(absent) >= 4
    else:
        assert absent == []


def test_check_backend_reports_differences(nusc, perturbed_results, tmp_path, monkeypatch):
    import perception.evaluation.metrics as m
    real = m.summarize

    def off_by_a_bit(*a, **k):
        s = real(*a, **k)
        s["mean_ap"] += 1e-6
        return s

    monkeypatch.setattr(m, "summarize", off_by_a_bit)
    with pytest.raises(MetricsMismatchError, match="mean_ap"):
        evaluate(perturbed_results, None, "v1.0-mini", "mini_val", tmp_path, backend="check", nusc=nusc)


def test_results_path_and_devkit_backend(nusc, perturbed_results, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(perturbed_results))
    fast = evaluate(path, None, "v1.0-mini", "mini_val", tmp_path / "fast", nusc=nusc)
    dk = evaluate(str(path), None, "v1.0-mini", "mini_val", tmp_path / "dk", backend="devkit", nusc=nusc)
    assert compare_summaries(fast, dk, TOL) == []
    assert fast["meta"] == perturbed_results["meta"]


def test_samples_must_match_split(nusc, perturbed_results, tmp_path):
    bad = copy.deepcopy(perturbed_results)
    bad["results"].pop(next(iter(bad["results"])))
    with pytest.raises(ValueError, match="samples in split"):
        evaluate(bad, None, "v1.0-mini", "mini_val", tmp_path, nusc=nusc)


def test_metrics_command_line(nusc, perturbed_results, tmp_path, capsys, monkeypatch):
    import argparse

    import perception.evaluation.metrics as m
    from perception.evaluation.commands import add_metrics_arguments, metrics_command
    monkeypatch.setattr(m, "_load_nusc", lambda *a: nusc)     # the scene is already loaded
    path = tmp_path / "results.json"
    path.write_text(json.dumps(perturbed_results))
    parser = argparse.ArgumentParser()
    add_metrics_arguments(parser)
    args = parser.parse_args(["--results", str(path), "--dataroot", nusc.dataroot, "--version",
                              "v1.0-mini", "--split", "mini_val", "--backend", "check",
                              "--out", str(tmp_path / "out")])
    assert metrics_command(args) == 0
    out = capsys.readouterr().out
    assert "NDS:" in out and "Per-class results:" in out and "fast backend: read_json" in out
    assert (tmp_path / "out" / "metrics_summary.json").is_file()


def test_results_validation():
    good = box("s0", "car", (0, 0), 0.5).serialize()
    for change, message in (({"detection_name": "tram"}, "detection_name"),
                            ({"attribute_name": "vehicle.flying"}, "attribute_name"),
                            ({"size": [1.0, 2.0]}, "size"),
                            ({"detection_score": float("nan")}, "score")):
        with pytest.raises(ValueError, match=message):
            results_to_arrays({"s0": [dict(good, **change)]}, 500)
