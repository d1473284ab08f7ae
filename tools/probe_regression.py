"""How well a checkpoint regresses box geometry, read at the ground-truth centre cells of a split.

    python tools/probe_regression.py configs/synthetic/fusion.yaml CHECKPOINT \\
        --dataroot data/synthetic/demo --version v1.0-mini --split mini_val [--frames 40] \\
        [--modalities lidar,radar] [--at-detections] [--set KEY=VALUE] [--json OUT.json]

nuScenes' TP errors (mATE, mAOE, mAVE) only count boxes the heatmap found and matched, so they
mix detection and regression. This reads the head's regression where the training loss does
(``CenterHead.read_at_centres``) and prints, per class: objects, how many move (> 0.5 m/s),
the centre error (m), the median heading error and the share flipped by more than 150 deg, the
mean velocity error of moving and of static objects (m/s), and the median ratio of predicted to
true speed of the moving ones (0 = velocity not learnt, 1 = right). docs/training.md uses it.

``--at-detections``: the same table read at the decoded detections instead (the network's
output and the config's decoding, e.g. ``head.refine_window``, without the steps after it):
each ground-truth object inside the grid against the nearest detection of its class scoring at
least 0.3 within 2 m (unmatched objects left out). Where the two tables differ, the detections
are not read where the loss taught the head (docs/results.md, "Centre and heading from the
window around the peak").
"""
from __future__ import annotations

import argparse
import math
import sys

import torch

MOVING = 0.5  # m/s
MATCH_SCORE, MATCH_DIST = 0.3, 2.0   # --at-detections: the detections a ground truth may take


def match_detections(gt, dets, grid, *, min_score: float = MATCH_SCORE,
                     max_dist: float = MATCH_DIST):
    """Each ground-truth object inside ``grid`` and its nearest detection (centre distance) of
    the same class scoring >= ``min_score`` within ``max_dist`` m; a detection may serve two.
    Returns ``(labels (M,), target (M, 9), predicted (M, 9))`` like ``read_at_centres``."""
    boxes, labels = gt.boxes.tensor, gt.labels
    keep = grid.in_range(boxes[:, :2])
    boxes, labels = boxes[keep], labels[keep]
    strong = dets.scores >= min_score
    d_boxes, d_labels = dets.boxes.tensor[strong], dets.labels[strong]
    dist = torch.cdist(boxes[:, :2].double(), d_boxes[:, :2].double())          # (N, D)
    dist = dist.masked_fill(labels[:, None] != d_labels[None], float("inf"))
    if dist.shape[1] == 0:
        empty = boxes[:0]
        return labels[:0], empty, empty
    best, idx = dist.min(dim=1)
    ok = best <= max_dist
    return labels[ok], boxes[ok], d_boxes[idx[ok]]


def probe(cfg, checkpoint, dataroot, version, split, *, frames=0, modalities=None,
          threads=2, at_detections: bool = False) -> dict[str, dict]:
    from perception.engine.inference import build_eval_loader
    from perception.engine.probe import load_model, spread
    from perception.structures.batch import collate

    mods = tuple(modalities or cfg.model.modalities)
    model = load_model(cfg, checkpoint, threads)
    # The eval loader's dataset (sensors of ``mods`` only, images at the network size), read
    # at an even spread of samples only.
    dataset = build_eval_loader(cfg, dataroot, version, split, mods).dataset
    labels, target, pred = [], [], []
    with torch.no_grad():
        for i in spread(len(dataset), frames):
            frame = dataset[i]
            if frame.gt is None:
                raise SystemExit(f"{dataroot} {split}: sample {frame.token} has no annotations; "
                                 "the probe needs a split with ground truth")
            if not frame.modalities & set(mods):   # its sensors failed to load (the reader warned)
                continue
            batch = collate([frame])
            out = model(batch, modalities=mods)
            if at_detections:
                found = [match_detections(g, d, model.grid)
                         for g, d in zip(batch.gt, model.head.decode(out.heads))]
            else:
                found = model.head.read_at_centres(out.heads, batch.gt)
            for lab, tgt, prd in found:
                labels.append(lab)
                target.append(tgt.double())
                pred.append(prd.double())
    return summarize(torch.cat(labels), torch.cat(target), torch.cat(pred), cfg.model.classes)


def summarize(labels, target, pred, classes) -> dict[str, dict]:
    out = {}
    for c, name in enumerate(classes):
        sel = labels == c
        if not sel.any():
            continue
        t, p = target[sel], pred[sel]
        centre = torch.hypot(p[:, 0] - t[:, 0], p[:, 1] - t[:, 1])
        # The devkit's period: a barrier turned round is the same barrier (and a model with
        # ``head.half_turn`` gives its yaw modulo pi), so no barrier counts as flipped.
        period = math.pi if name == "barrier" else 2 * math.pi
        yaw = torch.remainder(p[:, 6] - t[:, 6] + period / 2, period) - period / 2
        speed = torch.hypot(t[:, 7], t[:, 8])
        known = torch.isfinite(speed)
        vel_err = torch.hypot(p[:, 7] - t[:, 7], p[:, 8] - t[:, 8])
        moving = known & (speed > MOVING)
        static = known & ~moving
        ratio = torch.hypot(p[moving, 7], p[moving, 8]) / speed[moving]
        out[name] = {
            "objects": int(sel.sum()), "moving": int(moving.sum()),
            "centre_err_m": float(centre.mean()),
            "heading_err_median_rad": float(yaw.abs().median()),
            "heading_flipped_share": float((yaw.abs() > math.radians(150)).double().mean()),
            "vel_err_moving_mps": float(vel_err[moving].mean()) if moving.any() else None,
            "vel_err_static_mps": float(vel_err[static].mean()) if static.any() else None,
            "speed_ratio_moving_median": float(ratio.median()) if moving.any() else None,
        }
    return out


def table(rows: dict[str, dict]) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["| class | objects | moving | centre err m | heading err (median, rad) | flipped "
             "> 150 deg | vel err moving m/s | vel err static m/s | speed ratio moving |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['objects']} | {r['moving']} | {f(r['centre_err_m'], '.2f')} | "
                     f"{f(r['heading_err_median_rad'], '.2f')} | "
                     f"{f(r['heading_flipped_share'], '.2f')} | {f(r['vel_err_moving_mps'], '.2f')} | "
                     f"{f(r['vel_err_static_mps'], '.2f')} | {f(r['speed_ratio_moving_median'], '.2f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from perception.engine.probe import add_probe_arguments, load_experiment, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_arguments(ap)
    ap.add_argument("--modalities", default=None, help="comma-separated subset of the model's")
    ap.add_argument("--at-detections", action="store_true",
                    help="read at the matched detections instead of the ground-truth centre cells")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, as for `perception train`")
    args = ap.parse_args(argv)
    cfg = load_experiment(args.config, args.set)
    mods = args.modalities.split(",") if args.modalities else None
    rows = probe(cfg, args.checkpoint, args.dataroot, args.version, args.split,
                 frames=args.frames, modalities=mods, threads=args.threads,
                 at_detections=args.at_detections)
    print(table(rows))
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
