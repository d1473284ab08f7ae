"""Which class a results file takes each class for, and where its false positives lie.

    python tools/confusions.py RESULTS_JSON --dataroot D --version V --split S \\
        [--class truck ...] [--min-score 0.3] [--radius 2.0] [--near 6.0]

The boxes are the metrics' own (``prepare_boxes``: the devkit's class ranges, boxes without
points and bike racks filtered out). For each class asked for (default: all ten):

- its ground-truth boxes, and the class of the highest-scoring detection within ``--radius``
  metres of each (any class, score at least ``--min-score``; "none" where there is none): how
  often the class is found as itself and what it is taken for;
- its detections with score at least ``--min-score`` that have no ground-truth box of their class
  within ``--radius`` (false positives at the devkit's loosest threshold), by the class of the
  nearest ground-truth box where one lies within ``--near`` metres ("far" where none does):
  a detection beside another object (a second label, or a box too far along a long vehicle)
  against one where nothing is.

docs/results.md ("Where the fusion model's false trucks lie") uses it.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def confusions(gt, pred, classes: list[str], names: list[str], *, min_score: float,
               radius: float, near: float) -> dict[str, dict]:
    """Per class name: {"gt": n, "taken_for": {class or "none": n}, "detections": n,
    "false": n, "false_near": {class or "far": n}}. ``gt`` and ``pred`` are the metrics'
    BoxArrays (``label`` indexes ``names``, ``sample`` their own ``sample_tokens``)."""
    out = {}
    keep = pred.score >= min_score
    # The two may list the frames in different orders: the predictions' frames as ground truth's.
    pos = {tok: i for i, tok in enumerate(gt.sample_tokens)}
    frame = np.array([pos[t] for t in pred.sample_tokens], np.int64)[pred.sample]
    by_frame_pred = {s: np.nonzero(keep & (frame == s))[0] for s in np.unique(frame)}
    by_frame_gt = {s: np.nonzero(gt.sample == s)[0] for s in np.unique(gt.sample)}
    empty = np.zeros(0, np.int64)
    for name in classes:
        c = names.index(name)
        taken: dict[str, int] = {}
        for i in np.nonzero(gt.label == c)[0]:
            q = by_frame_pred.get(gt.sample[i], empty)
            d = np.linalg.norm(pred.translation[q, :2] - gt.translation[i, :2], axis=1)
            q = q[d < radius]
            key = names[pred.label[q[pred.score[q].argmax()]]] if len(q) else "none"
            taken[key] = taken.get(key, 0) + 1
        dets = np.nonzero(keep & (pred.label == c))[0]
        false_near: dict[str, int] = {}
        n_false = 0
        for j in dets:
            g = by_frame_gt.get(frame[j], empty)
            d = np.linalg.norm(gt.translation[g, :2] - pred.translation[j, :2], axis=1)
            if ((gt.label[g] == c) & (d < radius)).any():
                continue
            n_false += 1
            key = names[gt.label[g[d.argmin()]]] if len(g) and d.min() < near else "far"
            false_near[key] = false_near.get(key, 0) + 1
        out[name] = {"gt": int((gt.label == c).sum()), "taken_for": taken,
                     "detections": int(len(dets)), "false": n_false, "false_near": false_near}
    return out


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="results_nusc.json")
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--class", dest="classes", action="append", default=None,
                   help="a detection class (repeatable; default: all ten)")
    p.add_argument("--min-score", type=float, default=0.3)
    p.add_argument("--radius", type=float, default=2.0, help="metres: a match (default 2.0)")
    p.add_argument("--near", type=float, default=6.0,
                   help="metres: a false positive's nearest ground truth counts up to here")
    args = p.parse_args(argv)

    from nuscenes.eval.detection.constants import DETECTION_NAMES
    from nuscenes.nuscenes import NuScenes

    from perception.evaluation.metrics import get_config, prepare_boxes

    names = list(DETECTION_NAMES)
    classes = args.classes or names
    unknown = [c for c in classes if c not in names]
    if unknown:
        print(f"confusions: unknown class {unknown[0]!r}; one of {', '.join(names)}",
              file=sys.stderr)
        return 2
    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    try:
        gt, pred, _ = prepare_boxes(args.results, nusc, args.split, get_config())
    except (OSError, KeyError, ValueError) as e:
        print(f"confusions: {args.results}: {e}", file=sys.stderr)
        return 2
    table = confusions(gt, pred, classes, names, min_score=args.min_score, radius=args.radius,
                       near=args.near)
    for name, row in table.items():
        print(f"{name}: {row['gt']} ground-truth boxes; the top detection within "
              f"{args.radius:g} m (score >= {args.min_score:g}): {_counts(row['taken_for'])}")
        print(f"{name}: {row['detections']} detections with score >= {args.min_score:g}, "
              f"{row['false']} with no {name} within {args.radius:g} m; the nearest ground truth "
              f"within {args.near:g} m: {_counts(row['false_near'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
