"""Velocity and heading of detections against the ground truth, per class, from results files.

    python tools/probe_velocity.py RESULTS_JSON [OTHER_RESULTS_JSON] --dataroot D \\
        --version V --split S [--min-score 0.2] [--radius 2.0]

Each ground-truth box is matched to the nearest detection of its class within ``--radius``
metres (score above ``--min-score``). Per class it prints the matched boxes, how many move
(> 1 m/s), the share whose heading is within 0.5 rad, turned round (> 2.6 rad) or in between,
for the moving ones the share turned round, the mean velocity error (m/s), their mean speed
and the median of (predicted velocity . true velocity) / speed^2 (0 = speed not found, 1 =
right), and the share of the others (static, or no velocity known) turned round: the heading
that motion cannot tell. With a second results file over the same samples and in the same order
of boxes (the same model with and without ``model.radar.refine_velocity``), the matches of the
first are read in both and it prints, per class, the velocity error before and after: median,
90th percentile, mean, and how many got better or worse by more than 2 m/s. docs/results.md
("Radar velocity refinement") uses it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

MOVING = 1.0  # m/s


def load(path: str) -> dict[str, list[dict]]:
    with open(path) as f:
        return json.load(f)["results"]


def yaw_of(quaternion) -> float:
    w, x, y, z = quaternion
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def matches(results, gt, min_score: float, radius: float):
    """Per class: (gt box, index of the matched detection in its sample's list, sample token)."""
    out: dict[str, list] = {}
    for token in gt.sample_tokens:
        dets = results.get(token, [])
        for box in gt[token]:
            best, best_d = None, radius
            for i, r in enumerate(dets):
                if r["detection_name"] != box.detection_name or r["detection_score"] <= min_score:
                    continue
                d = math.hypot(r["translation"][0] - box.translation[0],
                               r["translation"][1] - box.translation[1])
                if d < best_d:
                    best, best_d = i, d
            if best is not None:
                out.setdefault(box.detection_name, []).append((box, best, token))
    return out


def heading_table(results, found) -> None:
    print(f"{'class':22s} {'n':>5s} {'moving':>6s} {'<0.5':>5s} {'>2.6':>5s} {'mid':>5s} | "
          f"{'moving: turned':>14s} {'vel err':>7s} {'speed':>6s} {'ratio':>6s} | "
          f"{'static: turned':>14s}")
    for name in sorted(found):
        rows = []
        for box, i, token in found[name]:
            r = results[token][i]
            v = np.array(box.velocity, dtype=float)
            p = np.array(r["velocity"], dtype=float)
            dy = abs((yaw_of(r["rotation"]) - yaw_of(box.rotation) + math.pi) % (2 * math.pi)
                     - math.pi)
            speed = float(np.hypot(*v)) if np.all(np.isfinite(v)) else float("nan")
            rows.append((dy, speed, float(np.hypot(*(p - v))), float(p @ v) / max(speed, 1e-6) ** 2))
        a = np.array(rows)
        mv = a[:, 1] > MOVING
        cols = [(a[:, 0] < 0.5).mean(), (a[:, 0] > 2.6).mean(),
                ((a[:, 0] >= 0.5) & (a[:, 0] <= 2.6)).mean()]
        if mv.any():
            moving = [(a[mv, 0] > 2.6).mean(), a[mv, 2].mean(), a[mv, 1].mean(),
                      float(np.median(a[mv, 3]))]
        else:
            moving = [float("nan")] * 4
        static = (a[~mv, 0] > 2.6).mean() if (~mv).any() else float("nan")
        print(f"{name:22s} {len(a):5d} {int(mv.sum()):6d} " + " ".join(f"{c:5.2f}" for c in cols)
              + f" | {moving[0]:14.2f} {moving[1]:7.2f} {moving[2]:6.2f} {moving[3]:6.2f}"
              + f" | {static:14.2f}")


def compare_table(first, second, found) -> None:
    print(f"{'class':22s} {'':7s} {'n':>5s} | {'before q50':>10s} {'q90':>6s} {'mean':>6s} | "
          f"{'after q50':>9s} {'q90':>6s} {'mean':>6s} | {'better>2':>8s} {'worse>2':>7s}")
    for name in sorted(found):
        rows = []
        for box, i, token in found[name]:
            v = np.array(box.velocity, dtype=float)
            if not np.all(np.isfinite(v)):
                continue
            a = np.array(first[token][i]["velocity"], dtype=float)
            b = np.array(second[token][i]["velocity"], dtype=float)
            rows.append((float(np.hypot(*v)), float(np.hypot(*(a - v))), float(np.hypot(*(b - v)))))
        if not rows:
            continue
        r = np.array(rows)
        for label, m in (("moving", r[:, 0] > MOVING), ("static", r[:, 0] <= MOVING)):
            if not m.any():
                continue
            x = r[m]
            q = lambda c: (np.quantile(x[:, c], 0.5), np.quantile(x[:, c], 0.9), x[:, c].mean())
            print(f"{name:22s} {label:7s} {len(x):5d} | {q(1)[0]:10.2f} {q(1)[1]:6.2f} {q(1)[2]:6.2f}"
                  f" | {q(2)[0]:9.2f} {q(2)[1]:6.2f} {q(2)[2]:6.2f} | "
                  f"{int(((x[:, 1] - x[:, 2]) > 2).sum()):8d} {int(((x[:, 2] - x[:, 1]) > 2).sum()):7d}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="results_nusc.json")
    ap.add_argument("other", nargs="?", help="a second results_nusc.json to compare with")
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--min-score", type=float, default=0.2)
    ap.add_argument("--radius", type=float, default=2.0)
    args = ap.parse_args(argv)

    from nuscenes import NuScenes
    from nuscenes.eval.common.loaders import load_gt
    from nuscenes.eval.detection.data_classes import DetectionBox

    first = load(args.results)
    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    gt = load_gt(nusc, args.split, DetectionBox, verbose=False)
    found = matches(first, gt, args.min_score, args.radius)
    if args.other is None:
        heading_table(first, found)
        return 0
    second = load(args.other)
    for token in first:
        if len(first[token]) != len(second.get(token, [])):
            print(f"{args.other}: sample {token} has {len(second.get(token, []))} boxes, "
                  f"{args.results} {len(first[token])}: not the same detections", file=sys.stderr)
            return 2
    compare_table(first, second, found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
