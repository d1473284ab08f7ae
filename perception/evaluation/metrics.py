"""nuScenes detection metrics (mAP, TP errors, NDS), identical to the devkit's DetectionEval.

Pipeline of the ``fast`` backend, stage by stage (each mirrors a devkit step, see docs/evaluation.md):
  results JSON -> BoxArrays (results.results_to_arrays)     ~ load_prediction
  nuScenes tables -> BoxArrays (results.load_ground_truth)   ~ load_gt
  class range / no points / bike racks (results.filter_boxes) ~ add_center_dist + filter_eval_boxes
  greedy matching, all classes at once (matching.match_all)  ~ accumulate's matching loop
  101-point curves, AP, TP errors, NDS (this module)         ~ accumulate's tail, calc_ap, calc_tp,
                                                               DetectionMetrics.serialize
The curve arithmetic uses the same numpy operations on the same arrays as the devkit, so the
numbers agree to the bit (the tests allow 1e-9); only ``eval_time`` differs.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nuscenes.eval.detection.constants import DETECTION_NAMES, TP_METRICS
from nuscenes.eval.detection.data_classes import DetectionConfig, DetectionMetricData

from .commands import BACKENDS
from .matching import match_all
from .results import (CLASS_INDEX, BoxArrays, bike_racks, ego_positions, filter_boxes,
                      load_ground_truth, read_results, results_to_arrays, split_sample_tokens)

NELEM = DetectionMetricData.nelem   # 101 recall points
# TP errors the devkit does not evaluate for a class (NaN, left out of the class mean).
TP_EXCEPTIONS = {"traffic_cone": ("attr_err", "vel_err", "orient_err"),
                 "barrier": ("attr_err", "vel_err")}


class MetricsMismatchError(RuntimeError):
    """``backend="check"``: the fast backend and the devkit disagree."""

    def __init__(self, differences: list[str]):
        self.differences = differences
        super().__init__(f"{len(differences)} metric(s) differ between fast and devkit:\n  "
                         + "\n  ".join(differences[:50]))


def get_config(config: str | Path | Mapping | DetectionConfig | None = None) -> DetectionConfig:
    """A DetectionConfig from a name (default detection_cvpr_2019), a JSON path or a dict."""
    if isinstance(config, DetectionConfig):
        return config
    if config is None or (isinstance(config, str) and not config.endswith(".json")):
        from nuscenes.eval.common.config import config_factory
        return config_factory(config or "detection_cvpr_2019")
    if isinstance(config, Mapping):
        return DetectionConfig.deserialize(dict(config))
    with open(config) as f:
        return DetectionConfig.deserialize(json.load(f))


# ----------------------------------------------------------------------------------------------
# Per-match TP errors (vectorized utils.center_distance, velocity_l2, scale_iou, yaw_diff, attr_acc)
# ----------------------------------------------------------------------------------------------
def quaternion_yaw(q: np.ndarray) -> np.ndarray:
    """Yaw of (N, 4) w, x, y, z quaternions, as pyquaternion + the devkit's quaternion_yaw.

    pyquaternion normalises unless the squared norm is within 1e-14 of 1 (a zero quaternion stays
    zero and gives yaw 0), then yaw = atan2(R[1, 0], R[0, 0]) with R its rotation matrix; the
    products are summed in the order of its 4x4 matrix product. BLAS may round those sums
    differently in the last bit: orientation errors can differ by ~1e-16, never a decision.
    """
    q = np.asarray(q, np.float64)
    sq = np.sum(q * q, axis=1)
    norm = np.sqrt(sq)
    scale = np.where((np.abs(1.0 - sq) < 1e-14) | (norm <= 0), 1.0, norm)
    w, x, y, z = (q / scale[:, None]).T
    r00 = x * x + w * w - z * z - y * y
    r10 = y * x + z * w + w * z + x * y
    return np.arctan2(r10, r00)


def angle_diff(x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    """Smallest signed angle from y to x (the devkit's angle_diff, elementwise)."""
    diff = (x - y + period / 2) % period - period / 2
    return np.where(diff > np.pi, diff - 2 * np.pi, diff)


def match_errors(gt: BoxArrays, pred: BoxArrays, p: np.ndarray, g: np.ndarray,
                 class_name: str) -> dict[str, np.ndarray]:
    """TP errors of matched pairs (pred rows p, GT rows g), in the order given."""
    dxy = pred.translation[p, :2] - gt.translation[g, :2]
    trans = np.sqrt(dxy[:, 0] * dxy[:, 0] + dxy[:, 1] * dxy[:, 1])
    dv = pred.velocity[p] - gt.velocity[g]
    vel = np.sqrt(dv[:, 0] * dv[:, 0] + dv[:, 1] * dv[:, 1])
    sa, sr = gt.size[g], pred.size[p]
    if not ((sa > 0).all() and (sr > 0).all()):
        # The devkit asserts this in scale_iou for every match.
        raise ValueError("box sizes must be > 0 (a matched ground-truth or predicted box has a "
                         "size <= 0)")
    mn = np.minimum(sa, sr)
    inter = mn[:, 0] * mn[:, 1] * mn[:, 2]
    union = sa[:, 0] * sa[:, 1] * sa[:, 2] + sr[:, 0] * sr[:, 1] * sr[:, 2] - inter
    scale = 1 - inter / union
    # Barrier orientation is only defined up to 180 degrees (cones are dropped later anyway).
    period = np.pi if class_name == "barrier" else 2 * np.pi
    orient = np.abs(angle_diff(quaternion_yaw(gt.rotation[g]), quaternion_yaw(pred.rotation[p]), period))
    ga = gt.attribute[g]
    acc = np.where(ga < 0, np.nan, (ga == pred.attribute[p]).astype(np.float64))
    return {"trans_err": trans, "vel_err": vel, "scale_err": scale, "orient_err": orient,
            "attr_err": 1 - acc}


def cummean(x: np.ndarray) -> np.ndarray:
    """NaN-ignoring running mean; all NaN -> ones (the devkit's rule for undefined errors)."""
    nan = np.isnan(x)
    if nan.all():
        return np.ones(len(x))
    total = np.nancumsum(x.astype(float))
    count = np.cumsum(~nan)
    return np.divide(total, count, out=np.zeros_like(total), where=count != 0)


def metric_curves(is_tp: np.ndarray, scores: np.ndarray, npos: int,
                  errors: dict[str, np.ndarray] | None) -> DetectionMetricData:
    """101-point precision / confidence / TP-error curves of one class at one threshold.

    ``is_tp`` and ``scores`` follow the visiting order; ``errors`` hold the matched ones in that
    order. Same arithmetic as the tail of the devkit's accumulate.
    """
    if npos == 0 or not is_tp.any():
        return DetectionMetricData.no_predictions()
    tp = np.cumsum(is_tp.astype(np.int64)).astype(float)
    fp = np.cumsum((~is_tp).astype(np.int64)).astype(float)
    prec = tp / (fp + tp)
    rec = tp / float(npos)
    rec_interp = np.linspace(0, 1, NELEM)
    prec = np.interp(rec_interp, rec, prec, right=0)
    conf = np.interp(rec_interp, rec, scores, right=0)
    match_conf = scores[is_tp]
    # The errors are running means over matches, resampled at the curve's confidences (np.interp
    # needs increasing x, hence the reversals).
    resampled = {name: np.interp(conf[::-1], match_conf[::-1], cummean(values)[::-1])[::-1]
                 for name, values in errors.items()}
    if np.any(np.diff(conf) > 0):
        # DetectionMetricData asserts descending confidences; negative scores break that.
        raise ValueError("interpolated confidences are not descending (negative detection "
                         "scores?); the devkit rejects this input too")
    return DetectionMetricData(recall=rec_interp, precision=prec, confidence=conf, **resampled)


def calc_ap(md: DetectionMetricData, min_recall: float, min_precision: float) -> float:
    """Area under the precision curve above min_recall, precision above min_precision rescaled."""
    prec = md.precision[round(100 * min_recall) + 1:] - min_precision
    prec[prec < 0] = 0
    return float(np.mean(prec)) / (1.0 - min_precision)


def calc_tp(md: DetectionMetricData, min_recall: float, metric_name: str) -> float:
    """Mean TP error from just above min_recall up to the highest recall reached (1.0 if none)."""
    first = round(100 * min_recall) + 1
    nonzero = np.flatnonzero(md.confidence)
    last = int(nonzero[-1]) if nonzero.size else 0
    if last < first:
        return 1.0
    return float(np.mean(getattr(md, metric_name)[first:last + 1]))


def compute_metric_data(gt: BoxArrays, pred: BoxArrays, cfg: DetectionConfig
                        ) -> dict[tuple[str, float], DetectionMetricData]:
    """The devkit's ``accumulate`` for every (class, dist_th) of the config, from filtered boxes."""
    class_names = list(cfg.class_names)
    order, matches = match_all(gt, pred, list(cfg.dist_ths), len(DETECTION_NAMES))
    sorted_labels = pred.label[order]
    out = {}
    for name in class_names:
        c = CLASS_INDEX[name]
        npos = int(np.count_nonzero(gt.label == c))
        lo, hi = np.searchsorted(sorted_labels, [c, c + 1])
        rows = order[lo:hi]                       # this class's predictions, visiting order
        scores = pred.score[rows]
        for th in cfg.dist_ths:
            g = matches[th][rows]
            is_tp = g >= 0
            errors = match_errors(gt, pred, rows[is_tp], g[is_tp], name) if npos and is_tp.any() else None
            out[(name, th)] = metric_curves(is_tp, scores, npos, errors)
    return out


def summarize(metric_data: Mapping[tuple[str, float], DetectionMetricData], cfg: DetectionConfig,
              eval_time: float | None = None, meta: dict | None = None) -> dict:
    """metrics_summary.json as the devkit writes it (DetectionMetrics.serialize + meta)."""
    label_aps: dict[str, dict[float, float]] = {}
    label_tp: dict[str, dict[str, float]] = {}
    for name in cfg.class_names:
        label_aps[name] = {th: calc_ap(metric_data[(name, th)], cfg.min_recall, cfg.min_precision)
                           for th in cfg.dist_ths}
        md_tp = metric_data[(name, cfg.dist_th_tp)]
        label_tp[name] = {m: (np.nan if m in TP_EXCEPTIONS.get(name, ()) else calc_tp(md_tp, cfg.min_recall, m))
                          for m in TP_METRICS}
    mean_dist_aps = {name: np.mean(list(aps.values())) for name, aps in label_aps.items()}
    mean_ap = float(np.mean(list(mean_dist_aps.values())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # nanmean of all-NaN is NaN, as there
        tp_errors = {m: float(np.nanmean([label_tp[name][m] for name in cfg.class_names]))
                     for m in TP_METRICS}
    # max(0.0, NaN) is 0.0 in Python; keep that argument order so NaN errors score 0 as there.
    tp_scores = {m: max(0.0, 1.0 - tp_errors[m]) for m in TP_METRICS}
    nd = float(cfg.mean_ap_weight * mean_ap + np.sum(list(tp_scores.values())))
    nd = nd / float(cfg.mean_ap_weight + len(tp_scores))
    summary = {"label_aps": label_aps, "mean_dist_aps": mean_dist_aps, "mean_ap": mean_ap,
               "label_tp_errors": label_tp, "tp_errors": tp_errors, "tp_scores": tp_scores,
               "nd_score": nd, "eval_time": eval_time, "cfg": cfg.serialize()}
    if meta is not None:
        summary["meta"] = dict(meta)
    return summary


def compute_metrics(gt: BoxArrays, pred: BoxArrays, cfg: DetectionConfig | None = None,
                    meta: dict | None = None) -> tuple[dict, dict]:
    """Metrics from already filtered boxes: (summary dict, {(class, dist_th): curves})."""
    cfg = get_config(cfg)
    start = time.time()
    md = compute_metric_data(gt, pred, cfg)
    summary = summarize(md, cfg, time.time() - start, meta)
    return summary, md


# ----------------------------------------------------------------------------------------------
# Whole evaluation: results file + dataset -> metrics_summary.json
# ----------------------------------------------------------------------------------------------
def _load_nusc(dataroot, version, verbose):
    from nuscenes import NuScenes
    return NuScenes(version=version, dataroot=str(dataroot), verbose=verbose)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def prepare_boxes(results, nusc, split: str, cfg: DetectionConfig, timings: dict | None = None
                  ) -> tuple[BoxArrays, BoxArrays, dict]:
    """Ground truth and predictions of ``split``, filtered as the devkit filters them (class
    range, no points, bike racks): (gt, pred, the results file's meta). ``timings`` (if given)
    receives seconds per stage."""
    t = {}
    t0 = time.perf_counter()
    data = read_results(results)
    t["read_json_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from nuscenes.utils.splits import is_predefined_split
    split_tokens = split_sample_tokens(nusc, split)
    if is_predefined_split(split_name=split):
        pred = results_to_arrays(data["results"], cfg.max_boxes_per_sample)
    else:
        missing = [s for s in split_tokens if s not in data["results"]]
        if missing:
            raise ValueError(f"{len(missing)} samples of split {split} have no entry in the results")
        pred = results_to_arrays(data["results"], cfg.max_boxes_per_sample, split_tokens)
    t["predictions_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    gt = load_ground_truth(nusc, split_tokens)
    t["ground_truth_s"] = time.perf_counter() - t0
    if set(pred.sample_tokens) != set(gt.sample_tokens):
        raise ValueError("samples in split don't match samples in predictions (every sample of the "
                         f"split needs an entry in `results`): {len(pred.sample_tokens)} predicted, "
                         f"{len(gt.sample_tokens)} in split {split}")

    t0 = time.perf_counter()
    ego = ego_positions(nusc, gt.sample_tokens)
    racks = bike_racks(nusc, gt.sample_tokens)
    gt = filter_boxes(nusc, gt, cfg.class_range, ego, racks)
    # Predictions may list samples in another order: map the shared lookups onto theirs.
    pos = {tok: i for i, tok in enumerate(gt.sample_tokens)}
    perm = np.array([pos[tok] for tok in pred.sample_tokens], np.int64)
    pred_racks = {int(j): racks[int(perm[j])] for j in range(len(perm)) if int(perm[j]) in racks}
    pred = filter_boxes(nusc, pred, cfg.class_range, ego[perm] if len(perm) else ego, pred_racks)
    t["filter_s"] = time.perf_counter() - t0
    if timings is not None:
        timings.update(t)
    return gt, pred, data["meta"]


def evaluate_fast(results, nusc, split: str, cfg: DetectionConfig,
                  out_dir: str | Path | None = None, timings: dict | None = None) -> dict:
    """The fast backend on a loaded NuScenes; ``timings`` (if given) receives seconds per stage."""
    t = {}
    gt, pred, meta = prepare_boxes(results, nusc, split, cfg, t)
    t0 = time.perf_counter()
    summary, md = compute_metrics(gt, pred, cfg, meta=meta)
    t["metrics_s"] = time.perf_counter() - t0
    if out_dir is not None:
        out_dir = Path(out_dir)
        _write_json(out_dir / "metrics_summary.json", summary)
        _write_json(out_dir / "metrics_details.json",
                    {f"{name}:{th}": m.serialize() for (name, th), m in md.items()})
    if timings is not None:
        timings.update(t)
    return summary


def evaluate_devkit(results, nusc, split: str, cfg: DetectionConfig, out_dir: str | Path,
                    verbose: bool = False) -> dict:
    """The devkit's DetectionEval.main (no plots), writing out_dir/metrics_summary.json."""
    import contextlib
    import io

    from nuscenes.eval.detection.evaluate import DetectionEval

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = None
    if not isinstance(results, (str, Path)):
        # DetectionEval reads a file: write the dict next to the outputs, removed afterwards.
        fd, tmp = tempfile.mkstemp(suffix=".json", prefix="results_", dir=out_dir)
        with os.fdopen(fd, "w") as f:
            json.dump(results, f)
        results = tmp
    try:
        # The devkit prints, and load_gt draws tqdm bars on stderr, whatever `verbose` says.
        with contextlib.ExitStack() as quiet:
            if not verbose:
                quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
                quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
            ev = DetectionEval(nusc, config=cfg, result_path=str(results), eval_set=split,
                               output_dir=str(out_dir), verbose=verbose)
            summary = ev.main(plot_examples=0, render_curves=False)
        # DetectionEval always makes an (here empty) plots folder.
        with contextlib.suppress(OSError):
            (out_dir / "plots").rmdir()
    finally:
        if tmp is not None:
            os.unlink(tmp)
    return summary


def evaluate(results: str | Path | Mapping[str, Any], dataroot: str | Path, version: str, split: str,
             out_dir: str | Path, backend: str = "fast", config=None, nusc=None,
             verbose: bool = False, tolerance: float = 1e-9, timings: dict | None = None) -> dict:
    """nuScenes detection metrics of a results JSON (path or dict); writes out_dir/metrics_summary.json.

    backend: "fast" (this package), "devkit" (DetectionEval) or "check" (both: the fast summary
    goes to out_dir, the devkit's to out_dir/devkit; raises MetricsMismatchError if any number
    differs by more than ``tolerance``, eval_time excepted). Returns the summary (the devkit's
    ``main()`` return value: label_aps keyed by float thresholds, NaN for undefined errors).
    ``nusc``: an already loaded NuScenes to reuse (loading trainval takes tens of seconds).
    ``timings``: a dict that receives the fast backend's seconds per stage.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    cfg = get_config(config)
    if nusc is None:
        nusc = _load_nusc(dataroot, version, verbose)
    out_dir = Path(out_dir)
    if backend == "fast":
        return evaluate_fast(results, nusc, split, cfg, out_dir, timings)
    if backend == "devkit":
        return evaluate_devkit(results, nusc, split, cfg, out_dir, verbose)
    if isinstance(results, (str, Path)):
        results = read_results(results)   # read once, used by both
    ours = evaluate_fast(results, nusc, split, cfg, out_dir, timings)
    theirs = evaluate_devkit(results, nusc, split, cfg, out_dir / "devkit", verbose)
    diffs = compare_summaries(ours, theirs, tolerance)
    if diffs:
        raise MetricsMismatchError(diffs)
    return ours


def compare_summaries(a: Mapping, b: Mapping, tolerance: float = 1e-9,
                      ignore: tuple[str, ...] = ("eval_time",)) -> list[str]:
    """Differences between two metrics summaries as they would be written to JSON.

    Numbers agree when both are NaN or within ``tolerance``; keys are compared after the JSON
    round trip (float thresholds become "0.5", ...). Returns human-readable lines, [] if equal.
    """
    a = json.loads(json.dumps(a))
    b = json.loads(json.dumps(b))
    out: list[str] = []

    def walk(x, y, path):
        if isinstance(x, dict) and isinstance(y, dict):
            for key in list(x) + [k for k in y if k not in x]:
                if path == "" and key in ignore:
                    continue
                if key not in x or key not in y:
                    out.append(f"{path}/{key}: only in {'fast' if key in x else 'devkit'}")
                else:
                    walk(x[key], y[key], f"{path}/{key}")
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif (isinstance(x, (int, float)) and isinstance(y, (int, float))
              and not isinstance(x, bool) and not isinstance(y, bool)):
            if math.isnan(x) and math.isnan(y):
                return
            if math.isnan(x) or math.isnan(y) or abs(x - y) > tolerance:
                out.append(f"{path}: fast {x!r} vs devkit {y!r}")
        elif x != y:
            out.append(f"{path}: fast {x!r} vs devkit {y!r}")

    walk(a, b, "")
    return out


def format_summary(s: Mapping) -> str:
    """mAP, the five TP errors, NDS and the per-class table, as the devkit prints them."""
    names = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE",
             "attr_err": "mAAE"}
    lines = [f"mAP: {s['mean_ap']:.4f}"]
    lines += [f"{names[k]}: {v:.4f}" for k, v in s["tp_errors"].items()]
    lines += [f"NDS: {s['nd_score']:.4f}", "", "Per-class results:",
              "%-20s\t%-6s\t%-6s\t%-6s\t%-6s\t%-6s\t%-6s" % ("Object Class", "AP", "ATE", "ASE", "AOE", "AVE", "AAE")]
    for name, ap in s["mean_dist_aps"].items():
        tp = s["label_tp_errors"][name]
        lines.append("%-20s\t%-6.3f\t%-6.3f\t%-6.3f\t%-6.3f\t%-6.3f\t%-6.3f" % (
            name, ap, tp["trans_err"], tp["scale_err"], tp["orient_err"], tp["vel_err"], tp["attr_err"]))
    return "\n".join(lines)
