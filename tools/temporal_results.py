"""The temporal step (``model.temporal_velocity``, ``model.temporal_score``) on a results file.

    python tools/temporal_results.py RESULTS_JSON --dataroot D --version V --split S --out DIR \\
        [--min-score 0.3] [--disagree 1.0] [--no-velocity] [--still] [--confirm C]
        [--score-weight W] [--face-motion] [--metrics fast|devkit|check|none]

The step ``perception eval`` runs (``perception.models.temporal.TemporalStep``: the velocity
rule, with ``--still`` the still rule (``model.temporal_still``), with ``--confirm`` both
looking three keyframes back (``model.temporal_confirm``), with ``--score-weight`` the score
step; with ``--face-motion`` the step after it, ``model.face_motion``), here on a submission's
boxes, which are already in the global frame: per scene, keyframe after keyframe, each
detection is matched to the previous keyframe's. It writes DIR/results_nusc.json and, unless
``--metrics none``, DIR/metrics_summary.json with the metrics printed. Uses: adding the step to
results from another detector, or trying its parameters without running the network again
(docs/results.md, "Velocity from the previous keyframe", chose ``--min-score`` so). On results
of ``perception eval --set model.temporal_velocity=false --set model.temporal_still=false --set
model.temporal_score=0.0 --set model.face_motion=false``, ``--still --confirm 2.0
--score-weight 0.6 --face-motion`` gives what ``perception eval`` gives with the synthetic
configs as they stand (docs/results.md, "A weak detection where the object stood").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

def apply(results: dict, nusc, split: str, *, min_score: float = 0.3, disagree: float = 1.0,
          velocity: bool = True, still: bool = False, score_weight: float = 0.0,
          confirm: float | None = None, face_motion: bool = False) -> int:
    """Update ``results["results"]`` in place, scene by scene in time order, with the
    ``TemporalStep`` that ``perception eval`` runs (the boxes are already global, so the ego
    frame it works in is the global frame); returns how many boxes changed velocity or heading
    plus how many changed score. Samples of the split missing from the file raise ``KeyError``
    naming them. ``face_motion``: then ``perception.models.standstill.face_motion``, as
    ``perception eval`` runs it after the step (``model.face_motion``)."""
    from nuscenes.utils.splits import create_splits_scenes

    from perception.engine.inference import boxes_to_detections
    from perception.models.standstill import face_motion as face
    from perception.models.temporal import TemporalStep
    from perception.structures.labels import ATTRIBUTE_NAMES, DETECTION_CLASSES

    step = TemporalStep(DETECTION_CLASSES, velocity=velocity, still=still,
                        score_weight=score_weight, min_score=min_score, disagree=disagree,
                        confirm=confirm)
    identity = torch.eye(4, dtype=torch.float64)
    wanted = set(create_splits_scenes()[split])
    changed = 0
    for scene in nusc.scene:
        if scene["name"] not in wanted:
            continue
        token = scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            if token not in results["results"]:
                raise KeyError(f"sample {token} of scene {scene['name']} is not in the results")
            rows = results["results"][token]
            dets = boxes_to_detections(token, rows)
            out = step(scene["token"], sample["timestamp"], identity, dets)
            if face_motion:
                out = face(out, DETECTION_CLASSES)
            a, b = dets.boxes.tensor, out.boxes.tensor
            moved = ~((a == b) | (torch.isnan(a) & torch.isnan(b))).all(1)
            if bool(moved.any()):
                _, _, quat, vel = out.boxes.to_nuscenes()
                for i in torch.nonzero(moved).squeeze(1).tolist():
                    rows[i]["velocity"] = [float(v) for v in vel[i]]
                    rows[i]["rotation"] = [float(v) for v in quat[i]]
                    k = int(out.attributes[i])
                    rows[i]["attribute_name"] = ATTRIBUTE_NAMES[k] if k >= 0 else ""
            rescored = out.scores != dets.scores
            for i in torch.nonzero(rescored).squeeze(1).tolist():
                rows[i]["detection_score"] = float(out.scores[i])
            changed += int(moved.sum()) + int(rescored.sum())
            token = sample["next"]
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="results_nusc.json (global frame)")
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True, help="folder for results_nusc.json and the metrics")
    p.add_argument("--min-score", type=float, default=0.3)
    p.add_argument("--disagree", type=float, default=1.0)
    p.add_argument("--no-velocity", action="store_true", help="leave velocities as they are")
    p.add_argument("--still", action="store_true",
                   help="zero the speed the network gives what stood still (model.temporal_still)")
    p.add_argument("--score-weight", type=float, default=0.0,
                   help="raise the scores of detections seen in the previous keyframe (0: off)")
    p.add_argument("--confirm", type=float, default=None,
                   help="m/s: a displacement counts only where the partner's own displacement "
                        "agrees within this (model.temporal_confirm)")
    p.add_argument("--face-motion", action="store_true",
                   help="then turn moving boxes to face their velocity (model.face_motion)")
    p.add_argument("--metrics", default="fast", choices=("fast", "devkit", "check", "none"))
    args = p.parse_args(argv)

    from nuscenes.nuscenes import NuScenes

    from perception.engine.inference import compute_metrics, write_results

    with open(args.results) as f:
        results = json.load(f)
    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    try:
        n = apply(results, nusc, args.split, min_score=args.min_score, disagree=args.disagree,
                  velocity=not args.no_velocity, still=args.still, confirm=args.confirm,
                  score_weight=args.score_weight, face_motion=args.face_motion)
    except (KeyError, ValueError) as e:
        print(f"temporal_results: {args.results}: {e}", file=sys.stderr)
        return 2
    path = write_results(results, Path(args.out) / "results_nusc.json")
    print(f"{n} changes; wrote {path}")
    if args.metrics != "none":
        m = compute_metrics(path, args.dataroot, args.version, args.split, args.out,
                            backend=args.metrics, nusc=nusc)
        tp = m["tp_errors"]
        print(f"NDS {m['nd_score']:.4f}  mAP {m['mean_ap']:.4f}  mAOE {tp['orient_err']:.3f}  "
              f"mAVE {tp['vel_err']:.3f}  mAAE {tp['attr_err']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
