"""The paired scene bootstrap (perception/evaluation/bootstrap.py, tools/compare_results.py) on a
generated val split of two scenes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nuscenes.eval.common.loaders import load_gt
from nuscenes.eval.detection.data_classes import DetectionBox

from perception.evaluation import compare_summaries, compute_metrics, get_config
from perception.evaluation.bootstrap import paired_bootstrap, resample
from perception.evaluation.metrics import prepare_boxes
from tool_scripts import load_tool

CFG = get_config()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two mini_val scenes (``val_scenes=2``), 3 s each."""
    from nuscenes import NuScenes

    from perception.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth_bootstrap")
    generate(root, SynthConfig(scenes=2, val_scenes=2, duration_s=3.0, image_width=160,
                               image_height=90, workers=1, seed=31, sweeps=False), verbose=False)
    return NuScenes("v1.0-mini", str(root), verbose=False)


def detections(nusc, keep: float, seed: int) -> dict:
    """The ground truth as a detector would give it: jittered, each box kept with probability
    ``keep``, plus a few false positives per sample."""
    gt = load_gt(nusc, "mini_val", DetectionBox)
    rng = np.random.default_rng(seed)
    results = {}
    for token in gt.sample_tokens:
        out = []
        for b in gt[token]:
            if rng.random() > keep:
                continue
            vel = [0.0, 0.0] if np.isnan(b.velocity).any() else list(b.velocity)
            x, y = np.array(b.translation[:2]) + rng.normal(0, 0.3, 2)
            out.append({"sample_token": token, "translation": [x, y, b.translation[2]],
                        "size": list(b.size), "rotation": list(b.rotation), "velocity": vel,
                        "detection_name": b.detection_name,
                        "detection_score": float(rng.uniform(0.3, 1.0)),
                        "attribute_name": b.attribute_name})
        for _ in range(3):
            src = gt[token][int(rng.integers(len(gt[token])))] if gt[token] else None
            if src is None:
                break
            x, y = np.array(src.translation[:2]) + rng.normal(0, 15, 2)
            out.append({"sample_token": token, "translation": [x, y, 1.0], "size": [2, 4, 1.5],
                        "rotation": [1, 0, 0, 0], "velocity": [0, 0], "detection_name": "car",
                        "detection_score": float(rng.uniform(0, 0.5)), "attribute_name": ""})
        results[token] = out
    return {"meta": {"use_camera": False, "use_lidar": True, "use_radar": False,
                     "use_map": False, "use_external": False}, "results": results}


def test_resample_keeps_the_boxes_and_names_repeats(world):
    gt, pred, _ = prepare_boxes(detections(world, 0.9, 0), world, "mini_val", CFG)
    same_gt, same_pred = resample(gt, gt.sample_tokens), resample(pred, gt.sample_tokens)
    full, _ = compute_metrics(gt, pred, CFG)
    again, _ = compute_metrics(same_gt, same_pred, CFG)
    assert compare_summaries(full, again, 1e-12) == []
    assert 0.3 < full["nd_score"] < 1

    first = gt.sample_tokens[0]
    twice = resample(gt, [first, first])
    n = int(np.count_nonzero(gt.sample == 0))
    assert n > 0 and len(twice) == 2 * n
    assert twice.sample_tokens == [f"0:{first}", f"1:{first}"]
    assert twice.sample.tolist() == [0] * n + [1] * n
    np.testing.assert_array_equal(twice.translation[:n], twice.translation[n:])
    with pytest.raises(KeyError, match="not-a-sample"):
        resample(gt, ["not-a-sample"])


def test_a_model_against_itself_differs_by_nothing(world):
    res = detections(world, 0.9, 0)
    report = paired_bootstrap(res, res, world, "mini_val", resamples=5)
    assert report["scenes"] == 2 and report["resamples"] == 5
    assert report["samples"] == len(load_gt(world, "mini_val", DetectionBox).sample_tokens)
    for key, m in report["metrics"].items():
        if math.isnan(m["a"]):
            continue
        assert m["diff"] == 0 and m["low"] == 0 and m["high"] == 0, key
        assert m["a_better"] == 0, key


def test_the_better_model_wins_every_draw(world):
    good, poor = detections(world, 0.95, 1), detections(world, 0.4, 2)
    report = paired_bootstrap(good, poor, world, "mini_val", resamples=20, seed=3)
    nds = report["metrics"]["nd_score"]
    assert nds["diff"] > 0.1 and nds["low"] > 0 and nds["a_better"] == 1.0
    assert nds["low"] <= nds["high"]
    assert report["metrics"]["mean_ap"]["a_better"] == 1.0
    # The same seed draws the same scenes.
    again = paired_bootstrap(good, poor, world, "mini_val", resamples=20, seed=3)
    assert again["metrics"]["nd_score"] == nds
    flipped = paired_bootstrap(poor, good, world, "mini_val", resamples=20, seed=3)
    assert flipped["metrics"]["nd_score"]["a_better"] == 0.0
    assert flipped["metrics"]["nd_score"]["high"] == pytest.approx(-nds["low"])


def test_bad_arguments(world):
    res = detections(world, 0.9, 0)
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap(res, res, world, "mini_val", resamples=0)
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(res, res, world, "mini_val", level=1.0)


def test_compare_results_tool(world, tmp_path, capsys):
    tool = load_tool("compare_results")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results_nusc.json").write_text(json.dumps(detections(world, 0.95, 1)))
    (tmp_path / "b.json").write_text(json.dumps(detections(world, 0.4, 2)))
    common = ["--dataroot", world.dataroot, "--version", "v1.0-mini", "--split", "mini_val",
              "--resamples", "10"]
    assert tool.main([str(tmp_path / "a"), str(tmp_path / "b.json"), *common,
                      "--json", str(tmp_path / "report.json")]) == 0
    out = capsys.readouterr().out
    assert "2 scenes" in out and "| NDS |" in out and "| truck AP |" in out
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["metrics"]["nd_score"]["a_better"] == 1.0
    assert tool.main([str(tmp_path / "missing"), str(tmp_path / "b.json"), *common]) == 2
    assert "no results_nusc.json" in capsys.readouterr().err
