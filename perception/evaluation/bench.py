"""`perception bench --only eval`: the fast metrics vs the devkit's DetectionEval.evaluate.

Both run on the same generated, nuScenes-val-sized set (6,019 samples, 500 predictions each, about
25 ground-truth boxes per sample after the filters), held in memory, so the figure is the metric
computation itself (the devkit's ``eval_time``: matching, AP and TP errors for 10 classes x 4
thresholds), not JSON parsing or reading the dataset. Results loading is measured apart, on a
subset, because it is not what the devkit's eval_time covers.

    python -m perception.evaluation.bench                     # devkit on 1,000 samples, scaled
    python -m perception.evaluation.bench --devkit-samples 0  # devkit on all 6,019 (10+ minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

from nuscenes.eval.detection.constants import ATTRIBUTE_NAMES, DETECTION_NAMES

from .metrics import compare_summaries, compute_metrics, get_config
from .results import ATTRIBUTE_INDEX, BoxArrays, read_results, results_to_arrays

# Rough nuScenes val class mix of the annotations that survive the filters.
CLASS_FREQ = {"car": 0.42, "truck": 0.07, "bus": 0.015, "trailer": 0.02, "construction_vehicle": 0.013,
              "pedestrian": 0.2, "motorcycle": 0.01, "bicycle": 0.01, "traffic_cone": 0.1, "barrier": 0.122}
CLASS_ATTRS = {"car": ["vehicle.moving", "vehicle.parked", "vehicle.stopped"],
               "truck": ["vehicle.moving", "vehicle.parked", "vehicle.stopped"],
               "bus": ["vehicle.moving", "vehicle.parked", "vehicle.stopped"],
               "trailer": ["vehicle.moving", "vehicle.parked", "vehicle.stopped"],
               "construction_vehicle": ["vehicle.moving", "vehicle.parked", "vehicle.stopped"],
               "pedestrian": ["pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down"],
               "motorcycle": ["cycle.with_rider", "cycle.without_rider"],
               "bicycle": ["cycle.with_rider", "cycle.without_rider"],
               "traffic_cone": [""], "barrier": [""]}
CLASS_SIZE = {"car": (1.9, 4.6, 1.7), "truck": (2.5, 7.0, 2.9), "bus": (2.9, 11.0, 3.5),
              "trailer": (2.9, 12.0, 3.9), "construction_vehicle": (2.8, 6.5, 3.2),
              "pedestrian": (0.7, 0.7, 1.8), "motorcycle": (0.8, 2.1, 1.5), "bicycle": (0.6, 1.7, 1.3),
              "traffic_cone": (0.4, 0.4, 1.1), "barrier": (2.5, 0.5, 1.0)}


def _boxes(tokens, sample, label, xy, size, yaw, vel, score, attr, rng) -> BoxArrays:
    n = len(sample)
    translation = np.column_stack([xy, rng.uniform(-1, 2, n)])
    rotation = np.column_stack([np.cos(yaw / 2), np.zeros(n), np.zeros(n), np.sin(yaw / 2)])
    return BoxArrays(list(tokens), sample, label, translation, size, rotation, vel, score, attr,
                     np.full(n, -1, np.int64))


def make_eval_set(samples: int = 6019, preds_per_sample: int = 500, gt_per_sample: float = 25.0,
                  seed: int = 0) -> tuple[BoxArrays, BoxArrays]:
    """A generated (ground truth, predictions) pair shaped like nuScenes val and a detector.

    Every GT box is within its class range (the filters would keep it). Predictions: about 80%
    of GT boxes are detected (center noise 0.1-1.5 m, high scores), some twice, and the rest of
    each sample's 500 are low-score clutter anywhere within 50 m, as a detector's top-500 output.
    Scores are rounded to 1e-4, so ties occur as in real outputs.
    """
    rng = np.random.default_rng(seed)
    names = list(CLASS_FREQ)
    freq = np.array(list(CLASS_FREQ.values()))
    freq /= freq.sum()
    class_of = np.array([DETECTION_NAMES.index(n) for n in names])
    ranges = np.array([50, 50, 50, 50, 50, 40, 40, 40, 30, 30], np.float64)   # by DETECTION_NAMES
    sizes = np.array([CLASS_SIZE[n] for n in DETECTION_NAMES])
    attr_choices = [[ATTRIBUTE_INDEX[a] for a in CLASS_ATTRS[n]] for n in DETECTION_NAMES]
    tokens = [f"sample{i:05d}" for i in range(samples)]

    n_choices = np.array([len(a) for a in attr_choices])
    table = np.full((len(attr_choices), n_choices.max()), -1, np.int64)
    for c, a in enumerate(attr_choices):
        table[c, :len(a)] = a

    def attrs(label, blank_rate):
        a = table[label, (rng.random(len(label)) * n_choices[label]).astype(np.int64)]
        a[rng.random(len(a)) < blank_rate] = -1
        return a

    # Ground truth.
    n_gt = rng.poisson(gt_per_sample, samples)
    g_sample = np.repeat(np.arange(samples), n_gt)
    g_label = class_of[rng.choice(len(names), g_sample.size, p=freq)]
    r = ranges[g_label] * np.sqrt(rng.uniform(0, 0.98, g_sample.size))
    phi = rng.uniform(-np.pi, np.pi, g_sample.size)
    g_xy = np.column_stack([r * np.cos(phi), r * np.sin(phi)])
    g_size = sizes[g_label] * rng.uniform(0.85, 1.15, (g_sample.size, 3))
    g_yaw = rng.uniform(-np.pi, np.pi, g_sample.size)
    g_vel = rng.normal(0, 2, (g_sample.size, 2))
    g_vel[rng.random(g_sample.size) < 0.03] = np.nan            # unknown velocity, as in nuScenes
    gt = _boxes(tokens, g_sample, g_label, g_xy, g_size, g_yaw, g_vel, np.full(g_sample.size, -1.0),
                attrs(g_label, 0.01), rng)

    # Detections of GT boxes (some duplicated), then clutter up to preds_per_sample per sample.
    det = rng.random(g_sample.size) < 0.8
    src = np.flatnonzero(det)
    src = np.concatenate([src, src[rng.random(src.size) < 0.15]])
    noise = rng.uniform(0.1, 1.5, src.size)[:, None] * rng.normal(0, 1, (src.size, 2))
    per_sample = np.bincount(g_sample[src], minlength=samples)
    keep = np.ones(src.size, bool)
    over = np.flatnonzero(per_sample > preds_per_sample)
    for s in over:                                              # never more than the cap
        rows = np.flatnonzero(g_sample[src] == s)
        keep[rows[preds_per_sample:]] = False
    src, noise = src[keep], noise[keep]
    n_clutter = preds_per_sample - np.bincount(g_sample[src], minlength=samples)
    c_sample = np.repeat(np.arange(samples), n_clutter)
    c_label = class_of[rng.choice(len(names), c_sample.size, p=freq)]
    r = 50 * np.sqrt(rng.random(c_sample.size))
    phi = rng.uniform(-np.pi, np.pi, c_sample.size)

    p_sample = np.concatenate([g_sample[src], c_sample])
    p_label = np.concatenate([g_label[src], c_label])
    p_xy = np.concatenate([g_xy[src] + noise, np.column_stack([r * np.cos(phi), r * np.sin(phi)])])
    p_size = sizes[p_label] * rng.uniform(0.8, 1.2, (p_sample.size, 3))
    p_yaw = np.concatenate([g_yaw[src] + rng.normal(0, 0.3, src.size), rng.uniform(-np.pi, np.pi, c_sample.size)])
    p_vel = np.concatenate([np.nan_to_num(g_vel[src]) + rng.normal(0, 0.5, (src.size, 2)),
                            rng.normal(0, 1, (c_sample.size, 2))])
    p_score = np.concatenate([rng.beta(5, 2, src.size), rng.beta(1, 6, c_sample.size)]).round(4)
    p_attr = attrs(p_label, 0.0)
    # Group by sample (shuffled within a sample, as a detector's output is in no particular order).
    order = np.lexsort((rng.random(p_sample.size), p_sample))
    pred = _boxes(tokens, p_sample[order], p_label[order], p_xy[order], p_size[order], p_yaw[order],
                  p_vel[order], p_score[order], p_attr[order], rng)
    return gt, pred


def to_eval_boxes(b: BoxArrays):
    """BoxArrays -> the devkit's EvalBoxes of DetectionBox (for running the devkit on the same set)."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    eb = EvalBoxes()
    bounds = np.searchsorted(b.sample, np.arange(len(b.sample_tokens) + 1))
    tr, sz, rot, vel = b.translation.tolist(), b.size.tolist(), b.rotation.tolist(), b.velocity.tolist()
    score, num_pts = b.score.tolist(), b.num_pts.tolist()
    names = [DETECTION_NAMES[c] for c in b.label]
    attrs = [ATTRIBUTE_NAMES[a] if a >= 0 else "" for a in b.attribute]
    for i, tok in enumerate(b.sample_tokens):
        eb.add_boxes(tok, [DetectionBox(sample_token=tok, translation=tuple(tr[r]), size=tuple(sz[r]),
                                        rotation=tuple(rot[r]), velocity=tuple(vel[r]), num_pts=num_pts[r],
                                        detection_name=names[r], detection_score=score[r],
                                        attribute_name=attrs[r])
                           for r in range(bounds[i], bounds[i + 1])])
    return eb


def subset(b: BoxArrays, n_samples: int) -> BoxArrays:
    out = b.take(b.sample < n_samples)
    out.sample_tokens = b.sample_tokens[:n_samples]
    return out


def to_results(b: BoxArrays) -> dict:
    """BoxArrays -> a results dict in the submission format."""
    bounds = np.searchsorted(b.sample, np.arange(len(b.sample_tokens) + 1))
    tr, sz, rot, vel, score = (b.translation.tolist(), b.size.tolist(), b.rotation.tolist(),
                               b.velocity.tolist(), b.score.tolist())
    results = {}
    for i, tok in enumerate(b.sample_tokens):
        results[tok] = [{"sample_token": tok, "translation": tr[r], "size": sz[r], "rotation": rot[r],
                         "velocity": vel[r], "detection_name": DETECTION_NAMES[b.label[r]],
                         "detection_score": score[r],
                         "attribute_name": ATTRIBUTE_NAMES[b.attribute[r]] if b.attribute[r] >= 0 else ""}
                        for r in range(bounds[i], bounds[i + 1])]
    return {"meta": {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False,
                     "use_external": False}, "results": results}


def _devkit_evaluate(gt_eb, pred_eb, cfg):
    from nuscenes.eval.detection.evaluate import DetectionEval
    ev = object.__new__(DetectionEval)         # skip __init__: the boxes are already loaded
    ev.gt_boxes, ev.pred_boxes, ev.cfg, ev.verbose = gt_eb, pred_eb, cfg, False
    metrics, _ = ev.evaluate()
    return metrics.serialize()


def run_eval_bench(samples: int = 6019, preds_per_sample: int = 500, seed: int = 0,
                   devkit_samples: int | None = 1000, load_samples: int = 300,
                   repeat: int = 3, verbose: bool = False) -> dict:
    """Time the fast metrics against DetectionEval.evaluate on a generated set.

    ``devkit_samples``: run the devkit on the first N samples only and scale its time linearly to
    ``samples`` (its cost is per sample: a loop over each prediction and the GT of its sample);
    None or 0 runs it on all (10+ minutes at val scale, most of it building 3 M box objects and
    the devkit's matching loop). Ours runs on
    all samples (best of ``repeat``), and on the devkit's subset too, where the two summaries are
    compared (``identical``: every number within 1e-9). ``load_samples``: samples used to time
    reading the results JSON (json.load alone; ours: json.load + arrays; devkit: load_prediction,
    which includes the same json.load), scaled likewise.
    Returns the figures for ``{"eval": ...}``.
    """
    def log(msg):
        if verbose:
            print(f"[bench eval] {msg}", file=sys.stderr, flush=True)

    cfg = get_config()
    t0 = time.perf_counter()
    gt, pred = make_eval_set(samples, preds_per_sample, seed=seed)
    log(f"generated {len(gt)} GT / {len(pred)} predictions in {time.perf_counter() - t0:.1f} s")

    ours_ms = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        ours, _ = compute_metrics(gt, pred, cfg)
        ours_ms.append(1000 * (time.perf_counter() - t0))
    log(f"ours: {min(ours_ms):.0f} ms (mAP {ours['mean_ap']:.4f}, NDS {ours['nd_score']:.4f})")

    n_dk = samples if not devkit_samples else max(1, min(devkit_samples, samples))
    gt_dk, pred_dk = (gt, pred) if n_dk == samples else (subset(gt, n_dk), subset(pred, n_dk))
    t0 = time.perf_counter()
    gt_eb, pred_eb = to_eval_boxes(gt_dk), to_eval_boxes(pred_dk)
    log(f"built {len(pred_dk)} DetectionBox objects in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    theirs = _devkit_evaluate(gt_eb, pred_eb, cfg)
    devkit_measured_ms = 1000 * (time.perf_counter() - t0)
    del gt_eb, pred_eb
    ours_sub = ours if n_dk == samples else compute_metrics(gt_dk, pred_dk, cfg)[0]
    diffs = compare_summaries(ours_sub, theirs, 1e-9)
    devkit_ms = devkit_measured_ms * samples / n_dk
    log(f"devkit: {devkit_measured_ms:.0f} ms on {n_dk} samples -> {devkit_ms:.0f} ms; "
        f"{len(diffs)} differences")

    # Results loading on a subset: json.load + arrays vs the devkit's load_prediction.
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    n_load = max(1, min(load_samples, samples))
    fd, path = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(to_results(subset(pred, n_load)), f)
        t0 = time.perf_counter()
        data = read_results(path)
        load_json = 1000 * (time.perf_counter() - t0) * samples / n_load
        results_to_arrays(data["results"], cfg.max_boxes_per_sample)
        load_ours = 1000 * (time.perf_counter() - t0) * samples / n_load
        del data
        t0 = time.perf_counter()
        load_prediction(path, cfg.max_boxes_per_sample, DetectionBox)
        load_devkit = 1000 * (time.perf_counter() - t0) * samples / n_load
    finally:
        os.unlink(path)

    return {
        "ours_ms": round(min(ours_ms), 1),
        "devkit_ms": round(devkit_ms, 1),
        "speedup": round(devkit_ms / min(ours_ms), 1),
        "identical": not diffs,
        "samples": samples,
        "predictions": len(pred),
        "gt_boxes": len(gt),
        "devkit_samples": n_dk,
        "devkit_measured_ms": round(devkit_measured_ms, 1),
        "devkit_extrapolated": n_dk != samples,
        "load_results_json_ms": round(load_json, 1),
        "load_results_ours_ms": round(load_ours, 1),
        "load_results_devkit_ms": round(load_devkit, 1),
        "load_samples": n_load,
        "mean_ap": ours["mean_ap"],
        "nd_score": ours["nd_score"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"numpy {np.__version__}",
    }


def main(argv=None) -> int:
    from .commands import add_eval_bench_arguments, eval_bench
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_bench_arguments(parser)
    result = {"eval": eval_bench(parser.parse_args(argv))}
    print(json.dumps(result, indent=2))
    return 0 if result["eval"]["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
