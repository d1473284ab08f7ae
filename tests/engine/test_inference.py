"""Results JSON: the devkit reads it, boxes land in the global frame, attributes are valid; and
`perception eval` end to end on the real scene."""
from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import torch

from perception.engine.inference import (
    attribute_name,
    boxes_to_detections,
    default_attribute,
    detections_to_boxes,
    evaluate_checkpoint,
    results_meta,
    to_results,
    write_results,
)
from perception.structures import ATTRIBUTE_NAMES, DETECTION_CLASSES, Detections


def test_default_attributes_follow_the_devkit_vocabulary():
    for name in DETECTION_CLASSES:
        for speed in (0.0, 5.0, float("nan")):
            a = default_attribute(name, speed)
            if name in ("traffic_cone", "barrier"):
                assert a == ""
            else:
                assert a in ATTRIBUTE_NAMES
    assert default_attribute("car", 3.0) == "vehicle.moving"
    assert default_attribute("car", 0.0) == "vehicle.parked"
    assert default_attribute("bicycle", 0.0) == "cycle.without_rider"
    # A predicted attribute is kept only when it belongs to the class.
    assert attribute_name("car", ATTRIBUTE_NAMES.index("vehicle.stopped"), 0.0) == "vehicle.stopped"
    assert attribute_name("car", ATTRIBUTE_NAMES.index("pedestrian.moving"), 0.0) == "vehicle.parked"
    assert attribute_name("barrier", ATTRIBUTE_NAMES.index("vehicle.parked"), 0.0) == ""


def test_boxes_to_detections_undoes_detections_to_boxes():
    """Result box dicts back to Detections (global frame): the boxes, scores, labels and
    attributes that wrote them; an empty sample gives empty Detections; bad names are named."""
    boxes = torch.tensor([[10.0, -4.0, 1.0, 1.9, 4.5, 1.6, 0.7, 3.0, -1.0],
                          [-2.0, 8.0, 0.5, 0.6, 0.7, 1.8, -2.5, 0.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([DETECTION_CLASSES.index("car"), DETECTION_CLASSES.index("pedestrian")])
    attrs = torch.tensor([ATTRIBUTE_NAMES.index("vehicle.moving"),
                          ATTRIBUTE_NAMES.index("pedestrian.standing")])
    dets = Detections(boxes, torch.tensor([0.9, 0.4]), labels, attrs)
    rows = detections_to_boxes("s0", dets, torch.eye(4, dtype=torch.float64))
    back = boxes_to_detections("s0", rows)
    torch.testing.assert_close(back.boxes.tensor, boxes)
    torch.testing.assert_close(back.scores, torch.tensor([0.9, 0.4], dtype=torch.float64))
    assert torch.equal(back.labels, labels) and torch.equal(back.attributes, attrs)
    empty = boxes_to_detections("s1", [])
    assert len(empty) == 0 and empty.boxes.tensor.shape == (0, 9)
    with pytest.raises(ValueError, match=r"sample s0: unknown detection_name \['tram'\]"):
        boxes_to_detections("s0", [{**rows[0], "detection_name": "tram"}])
    with pytest.raises(ValueError, match=r"sample s0: unknown attribute_name \['car.flying'\]"):
        boxes_to_detections("s0", [{**rows[0], "attribute_name": "car.flying"}])


def _gt_items(dataroot, nusc, visible_only=False):
    from perception.data import NuScenesDataset

    ds = NuScenesDataset(dataroot, "v1.0-mini", "mini_val", sweeps=1, radar_sweeps=1,
                         modalities=(), nusc=nusc)
    items = []
    for i in range(len(ds)):
        f = ds[i]
        g = f.gt
        if visible_only:
            # What the devkit evaluates against: boxes with at least one LiDAR or radar point.
            g = g[(g.num_lidar_pts + g.num_radar_pts) > 0]
        scores = torch.linspace(0.9, 0.5, len(g)) if len(g) else torch.zeros(0)
        items.append((f.token, Detections(g.boxes, scores, g.labels, g.attributes), f.global_T_ego))
    return items


def test_results_load_with_the_devkit_and_sit_on_the_annotations(ekit, nusc, tmp_path):
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.eval.detection.utils import category_to_detection_name
    from pyquaternion import Quaternion

    items = _gt_items(ekit.dataroot, nusc)
    results = to_results(items, results_meta(("lidar", "radar")))
    path = write_results(results, tmp_path / "results_nusc.json")
    boxes, meta = load_prediction(str(path), 500, DetectionBox, verbose=False)
    assert meta == results_meta(("lidar", "radar"))
    assert set(boxes.sample_tokens) == {t for t, _, _ in items}
    # Every predicted box sits on its annotation in the global frame (the reader's GT went
    # global -> ego; the writer must bring it back exactly).
    n = 0
    for token, dets, _ in items[::5]:
        sample = nusc.get("sample", token)
        anns = [nusc.get("sample_annotation", t) for t in sample["anns"]]
        # The reader keeps the detection classes' annotations in table order; so does the writer.
        anns = [a for a in anns if category_to_detection_name(a["category_name"]) is not None]
        assert len(anns) == len(boxes[token])
        for b, a in zip(boxes[token], anns):
            assert b.detection_name == category_to_detection_name(a["category_name"])
            np.testing.assert_allclose(b.translation, a["translation"], atol=1e-3)
            np.testing.assert_allclose(b.size, a["size"], atol=1e-4)
            yaw_err = abs((Quaternion(b.rotation).yaw_pitch_roll[0]
                           - Quaternion(a["rotation"]).yaw_pitch_roll[0] + np.pi) % (2 * np.pi) - np.pi)
            # Upright boxes drop the ego pose's ~0.5 deg of roll/pitch twice (reader, writer),
            # which shifts the projected heading by up to a few milliradians.
            assert yaw_err < 5e-3
            vel = nusc.box_velocity(a["token"])[:2]
            if np.isfinite(vel).all():
                np.testing.assert_allclose(b.velocity, vel, atol=0.05)
            if b.detection_name in ("traffic_cone", "barrier"):
                assert b.attribute_name == ""
            else:
                assert b.attribute_name in ATTRIBUTE_NAMES
            n += 1
    assert n > 100
    # Ground truth as predictions scores (nearly) perfectly with the metrics used by `eval`.
    from perception.engine.inference import compute_metrics

    path = write_results(to_results(_gt_items(ekit.dataroot, nusc, visible_only=True),
                                    results_meta(("lidar",))), tmp_path / "visible.json")
    summary = compute_metrics(path, ekit.dataroot, "v1.0-mini", "mini_val", tmp_path / "m",
                              nusc=nusc)
    assert (tmp_path / "m" / "metrics_summary.json").is_file()
    present = [c for c, ap in summary["mean_dist_aps"].items() if ap > 0]
    assert len(present) >= 5
    assert all(summary["mean_dist_aps"][c] > 0.95 for c in present)
    for c in present:   # (classes without GT count as error 1 in the means)
        assert summary["label_tp_errors"][c]["trans_err"] < 0.01
        assert summary["label_tp_errors"][c]["scale_err"] < 0.01


def test_eval_command_end_to_end(ekit, nusc, tmp_path):
    """Train one step, then `perception eval` with a sensor subset."""
    from perception.cli import main
    from perception.config import save_config
    from perception.engine.train import train

    data = ekit.tiny_experiment(max_iters=1, checkpoint_interval=1)
    data["data"]["augment"]["paste"]["counts"] = {}
    cfg = ekit.make_config(data)
    train(cfg, tmp_path / "run", progress=False, nusc=nusc)
    cfg_path = save_config(cfg, tmp_path / "cfg.yaml")
    rc = main(["eval", str(cfg_path), "--checkpoint", str(tmp_path / "run" / "latest.pt"),
               "--dataroot", str(ekit.dataroot), "--version", "v1.0-mini", "--split", "mini_val",
               "--out", str(tmp_path / "eval"), "--modalities", "lidar,radar", "--workers", "0",
               "--threads", "1", "--bev-dir", str(tmp_path / "bev"), "--bev-min-score", "0"])
    assert rc == 0
    res = json.loads((tmp_path / "eval" / "results_nusc.json").read_text())
    assert res["meta"]["use_camera"] is False and res["meta"]["use_lidar"] is True
    assert len(res["results"]) == 41
    # One bird's-eye-view picture per frame, in split order, named by its sample token.
    pngs = sorted((tmp_path / "bev").glob("*.png"))
    assert [p.stem.split("_", 1)[1] for p in pngs] == list(res["results"])
    assert [int(p.stem.split("_")[0]) for p in pngs] == list(range(41))
    img = cv2.imread(str(pngs[0]))
    assert img.shape == (900, 900, 3) and img.std() > 5
    summary = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    assert "nd_score" in summary and "mean_dist_aps" in summary
    # A modality the model lacks is refused.
    with pytest.raises(ValueError, match="modalities"):
        evaluate_checkpoint(cfg, tmp_path / "run" / "latest.pt", ekit.dataroot, "v1.0-mini",
                            "mini_val", tmp_path / "e2", modalities=("sonar",), nusc=nusc)


def test_eval_survives_corrupt_sensor_files(ekit, nusc, tmp_path):
    """A corrupt LiDAR file drops LiDAR from that frame only; a frame left with none of the
    requested sensors gets no detections; the evaluation completes with every sample."""
    import os

    from perception.engine.train import train

    data = ekit.tiny_experiment(max_iters=1, checkpoint_interval=1)
    data["data"]["augment"]["paste"]["counts"] = {}
    cfg = ekit.make_config(data)
    train(cfg, tmp_path / "run", progress=False, nusc=nusc)

    # A copy of the dataset made of links, with one LiDAR keyframe replaced by garbage.
    root = tmp_path / "root"
    for dirpath, _, files in os.walk(ekit.dataroot):
        rel = os.path.relpath(dirpath, ekit.dataroot)
        os.makedirs(root / rel, exist_ok=True)
        for name in files:
            os.symlink(os.path.join(dirpath, name), root / rel / name)
    sample = nusc.sample[5]
    bad = root / nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["filename"]
    bad.unlink()
    bad.write_bytes(b"\x01\x02\x03")

    ck = tmp_path / "run" / "latest.pt"
    with pytest.warns(RuntimeWarning, match=re.escape(bad.name)):
        summary = evaluate_checkpoint(cfg, ck, root, "v1.0-mini", "mini_val", tmp_path / "e1",
                                      modalities=("lidar", "radar"), progress=False, nusc=nusc)
    res = json.loads((tmp_path / "e1" / "results_nusc.json").read_text())
    assert len(res["results"]) == 41 and "nd_score" in summary

    with pytest.warns(RuntimeWarning, match="no detections"):
        evaluate_checkpoint(cfg, ck, root, "v1.0-mini", "mini_val", tmp_path / "e2",
                            modalities=("lidar",), progress=False, nusc=nusc)
    res = json.loads((tmp_path / "e2" / "results_nusc.json").read_text())
    assert len(res["results"]) == 41
    assert res["results"][sample["token"]] == []


def test_run_inference_applies_the_temporal_step_in_order(ekit, nusc, tmp_path):
    """``run_inference(temporal=...)`` gives each frame's detections to the step in loader order
    with its scene, time and pose: the same as running the step afterwards by hand. (The step is
    set to change every match, so the comparison is not vacuous on a one-step model.) With
    ``face_motion`` the detections are then turned to face their motion, Frames or Batches."""
    from perception.engine.checkpoint import model_state
    from perception.engine.inference import build_eval_loader, run_inference
    from perception.engine.train import train
    from perception.models import build_model
    from perception.models.standstill import face_motion
    from perception.models.temporal import TemporalStep
    from perception.structures.batch import collate

    data = ekit.tiny_experiment(max_iters=1, checkpoint_interval=1)
    data["data"]["augment"]["paste"]["counts"] = {}
    cfg = ekit.make_config(data)
    train(cfg, tmp_path / "run", progress=False, nusc=nusc)
    model = build_model(cfg.model)
    model.load_state_dict(model_state(tmp_path / "run" / "latest.pt"))
    mods = ("lidar", "radar")

    def step():
        return TemporalStep(DETECTION_CLASSES, min_score=0.0, disagree=0.0,
                                min_speed={c: 0.0 for c in DETECTION_CLASSES})

    frames = list(build_eval_loader(cfg, ekit.dataroot, "v1.0-mini", "mini_val", mods, nusc=nusc))
    plain = run_inference(model, frames, modalities=mods, progress=False)
    hooked = run_inference(model, frames, modalities=mods, progress=False, temporal=step())
    by_hand, changed = step(), 0
    for (tok, d, T), (tok2, h, T2), [f] in zip(plain, hooked, frames):
        assert tok == tok2 == f.token and torch.equal(T, T2)
        expected = by_hand(f.scene_token, f.timestamp, f.global_T_ego, d)
        assert torch.equal(expected.boxes.tensor, h.boxes.tensor)
        changed += int((h.boxes.tensor != d.boxes.tensor).any(1).sum())
    assert changed > 0
    # Facing the motion comes last, after the temporal step, on every path.
    faced = run_inference(model, frames, modalities=mods, progress=False, temporal=step(),
                          face_motion=True)
    turned = 0
    for (_, h, _), (_, f, _) in zip(hooked, faced):
        expected = face_motion(h, DETECTION_CLASSES)
        assert torch.equal(expected.boxes.tensor, f.boxes.tensor)
        turned += int((f.boxes.tensor[:, 6] != h.boxes.tensor[:, 6]).sum())
    assert turned > 0
    batches = [collate(f) for f in frames]
    faced = run_inference(model, batches, modalities=mods, progress=False, face_motion=True)
    for (_, d, _), (_, f, _) in zip(plain, faced):
        assert torch.equal(face_motion(d, DETECTION_CLASSES).boxes.tensor, f.boxes.tensor)
    with pytest.raises(ValueError, match="loader of Frames"):
        run_inference(model, [collate(frames[0])], modalities=mods, progress=False,
                      temporal=step())
