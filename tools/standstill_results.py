"""The standstill rule (``model.standstill``) on a results file, and facing the motion.

    python tools/standstill_results.py RESULTS_JSON --dataroot D --version V --split S \\
        --out DIR [--speeds VEHICLE,CYCLE,PEDESTRIAN] [--face-motion] \\
        [--metrics fast|devkit|check|none]

``perception.models.standstill.apply_standstill``, the last step of ``predict`` when
``model.standstill`` is on, here on a submission's boxes: a detection of a vehicle, cycle or
pedestrian slower than its family's speed (``--speeds``, m/s, default the rule's 1.0, 1.0,
0.3) stands (velocity 0; a moving vehicle or pedestrian attribute becomes parked or standing),
one at that speed or faster gets the moving attribute. Speeds do not depend on the frame, so
the global boxes of the file are taken as they are. It writes DIR/results_nusc.json and, unless
``--metrics none``, DIR/metrics_summary.json with the metrics printed. Uses: the rule on
results from another detector or from a run without it, and its speeds tried without running
the network again (docs/results.md, "Standing or moving, by the speed", chose them so).
``--face-motion`` then turns every detection that moves to face its velocity
(``perception.models.standstill.face_motion``, ``model.face_motion``: the last step of
``perception eval``, after the temporal rules, so on a file from a run without it this gives
what the run with it writes, rounding aside: docs/results.md, "Facing the motion").
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def apply(results: dict, *, speeds: tuple[float, float, float] | None = None,
          turn: bool = False) -> int:
    """Update ``results["results"]`` in place; returns how many boxes changed velocity,
    attribute or (``turn``: then facing the motion) heading. A row of an unknown class or
    attribute raises ``ValueError`` naming its sample."""
    import torch

    from perception.engine.inference import boxes_to_detections
    from perception.models.standstill import MOVING_SPEED, apply_standstill, face_motion
    from perception.structures.labels import ATTRIBUTE_NAMES, DETECTION_CLASSES

    moving_speed = MOVING_SPEED if speeds is None else dict(zip(MOVING_SPEED, speeds))
    changed = 0
    for token, rows in results["results"].items():
        dets = boxes_to_detections(token, rows)
        out = apply_standstill(dets, DETECTION_CLASSES, moving_speed=moving_speed)
        quats = None
        if turn and len(out):
            faced = face_motion(out, DETECTION_CLASSES, moving_speed=moving_speed)
            # A row that already faces its motion (to the file's precision) is left as written.
            delta = faced.boxes.tensor[:, 6] - out.boxes.tensor[:, 6]
            turned = torch.remainder(delta + math.pi, 2 * math.pi).sub(math.pi).abs() > 1e-6
            quats = faced.boxes.to_nuscenes()[2]
        for i, row in enumerate(rows):
            vel = out.boxes.tensor[i, 7:9]
            k = int(out.attributes[i])
            attr = ATTRIBUTE_NAMES[k] if k >= 0 else ""
            stopped = bool((vel == 0).all()) and row["velocity"] != [0.0, 0.0]
            if stopped or attr != row["attribute_name"] or (quats is not None and turned[i]):
                changed += 1
            if quats is not None and turned[i]:
                row["rotation"] = [float(v) for v in quats[i]]
            if stopped:
                row["velocity"] = [0.0, 0.0]
            row["attribute_name"] = attr
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="results_nusc.json")
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True, help="folder for results_nusc.json and the metrics")
    p.add_argument("--speeds", default=None,
                   help="m/s from which vehicles, cycles and pedestrians move: three numbers, "
                        "comma-separated (default: the rule's, 1.0,1.0,0.3)")
    p.add_argument("--face-motion", action="store_true",
                   help="then turn each detection at or above its speed to face its velocity")
    p.add_argument("--metrics", default="fast", choices=("fast", "devkit", "check", "none"))
    args = p.parse_args(argv)

    speeds = None
    if args.speeds is not None:
        try:
            speeds = tuple(float(v) for v in args.speeds.split(","))
        except ValueError:
            speeds = ()
        if len(speeds) != 3 or not all(v >= 0 for v in speeds):
            print(f"standstill_results: --speeds {args.speeds!r}: need three speeds >= 0 "
                  "(vehicle,cycle,pedestrian)", file=sys.stderr)
            return 2

    from perception.engine.inference import compute_metrics, write_results

    with open(args.results) as f:
        results = json.load(f)
    try:
        n = apply(results, speeds=speeds, turn=args.face_motion)
    except ValueError as e:
        print(f"standstill_results: {args.results}: {e}", file=sys.stderr)
        return 2
    path = write_results(results, Path(args.out) / "results_nusc.json")
    print(f"{n} changes; wrote {path}")
    if args.metrics != "none":
        m = compute_metrics(path, args.dataroot, args.version, args.split, args.out,
                            backend=args.metrics)
        tp = m["tp_errors"]
        print(f"NDS {m['nd_score']:.4f}  mAP {m['mean_ap']:.4f}  mAOE {tp['orient_err']:.3f}  "
              f"mAVE {tp['vel_err']:.3f}  mAAE {tp['attr_err']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
