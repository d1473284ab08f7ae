"""Paired scene bootstrap: is one model's NDS above another's beyond the val set's own noise?

A val set is a draw of scenes, and a scene's 40 samples show the same few objects over and over:
a 7-scene val set holds about 7 buses, 7 trailers and 7 construction vehicles, and NDS averages
ten class APs, so one object a model happens to miss moves NDS by about a hundredth. Scenes, not
samples, are the independent draws, so they are what is resampled: each resample draws the
split's S scenes with replacement (a scene drawn twice counts twice), builds the ground truth and
both models' predictions over the drawn scenes, and computes both summaries with the fast
backend (the devkit's arithmetic, perception.evaluation.metrics). Both models are scored on the
same draw each time, so what the scenes share cancels and the spread of the differences is the
noise of comparing the two models on such a set. It says nothing about the training seed's
noise (another run of the same recipe), which docs/results.md measures separately.

    from perception.evaluation.bootstrap import paired_bootstrap
    report = paired_bootstrap("a/results_nusc.json", "b/results_nusc.json", nusc, "val")

``tools/compare_results.py`` prints it as a table.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from .metrics import compute_metrics, get_config, prepare_boxes
from .results import BoxArrays

HIGHER_IS_BETTER = ("nd_score", "mean_ap")
ERROR_NAMES = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE",
               "vel_err": "mAVE", "attr_err": "mAAE"}


def resample(boxes: BoxArrays, tokens: Sequence[str]) -> BoxArrays:
    """The boxes of the samples ``tokens`` (repeats allowed), in that order. Sample k of the
    result is named ``f"{k}:{token}"``, so two arrays resampled with the same tokens line up and
    a repeated sample is a sample of its own."""
    n = len(boxes.sample_tokens)
    starts = np.searchsorted(boxes.sample, np.arange(n), side="left")
    ends = np.searchsorted(boxes.sample, np.arange(n), side="right")
    where = {t: i for i, t in enumerate(boxes.sample_tokens)}
    rows, sample = [], []
    for k, token in enumerate(tokens):
        if token not in where:
            raise KeyError(f"sample {token} is not among the boxes' samples")
        i = where[token]
        rows.append(np.arange(starts[i], ends[i]))
        sample.append(np.full(ends[i] - starts[i], k, np.int64))
    idx = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    out = boxes.take(idx)
    return dataclasses.replace(out, sample_tokens=[f"{k}:{t}" for k, t in enumerate(tokens)],
                               sample=np.concatenate(sample) if sample else np.zeros(0, np.int64))


def _scores(summary: dict) -> dict[str, float]:
    out = {"nd_score": summary["nd_score"], "mean_ap": summary["mean_ap"]}
    out.update({k: summary["tp_errors"][k] for k in ERROR_NAMES})
    out.update({f"ap:{name}": v for name, v in summary["mean_dist_aps"].items()})
    return out


def _better(key: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a > b if key in HIGHER_IS_BETTER or key.startswith("ap:") else a < b


def paired_bootstrap(results_a, results_b, nusc, split: str, config=None, resamples: int = 200,
                     seed: int = 0, level: float = 0.9) -> dict[str, Any]:
    """Two results files (paths or dicts) over the same split, compared by a paired scene
    bootstrap. Returns {"scenes", "samples", "resamples", "level", "metrics": {key: {"a", "b",
    "diff", "low", "high", "a_better"}}} where a and b are the full set's metrics, diff = a - b,
    low/high the central ``level`` interval of the resampled differences and a_better the share of
    resamples in which A is better (higher NDS, mAP and class AP; lower errors). Keys: nd_score,
    mean_ap, the five TP errors (trans_err ...) and ``ap:CLASS`` for each class."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    cfg = get_config(config)
    gt, pred_a, _ = prepare_boxes(results_a, nusc, split, cfg)
    _, pred_b, _ = prepare_boxes(results_b, nusc, split, cfg)
    scenes: dict[str, list[str]] = {}
    for token in gt.sample_tokens:
        scenes.setdefault(nusc.get("sample", token)["scene_token"], []).append(token)
    groups = list(scenes.values())

    full_a = _scores(compute_metrics(gt, pred_a, cfg)[0])
    full_b = _scores(compute_metrics(gt, pred_b, cfg)[0])
    rng = np.random.default_rng(seed)
    draws: dict[str, list[tuple[float, float]]] = {k: [] for k in full_a}
    for _ in range(resamples):
        tokens = [t for s in rng.integers(0, len(groups), len(groups)) for t in groups[s]]
        g = resample(gt, tokens)
        a = _scores(compute_metrics(g, resample(pred_a, tokens), cfg)[0])
        b = _scores(compute_metrics(g, resample(pred_b, tokens), cfg)[0])
        for k in draws:
            draws[k].append((a[k], b[k]))
    tail = (1 - level) / 2
    metrics = {}
    for k, pairs in draws.items():
        arr = np.array(pairs, float)
        keep = ~np.isnan(arr).any(axis=1)     # an error undefined in a draw (no match) is left out
        d = arr[keep, 0] - arr[keep, 1]
        metrics[k] = {
            "a": full_a[k], "b": full_b[k], "diff": full_a[k] - full_b[k],
            "low": float(np.quantile(d, tail)) if d.size else float("nan"),
            "high": float(np.quantile(d, 1 - tail)) if d.size else float("nan"),
            "a_better": float(_better(k, arr[keep, 0], arr[keep, 1]).mean()) if d.size
            else float("nan")}
    return {"scenes": len(groups), "samples": len(gt.sample_tokens), "resamples": resamples,
            "level": level, "metrics": metrics}
