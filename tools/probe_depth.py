"""How well a checkpoint's camera lift predicts depth, against the LiDAR of a split.

    python tools/probe_depth.py configs/synthetic/camera.yaml CHECKPOINT \\
        --dataroot data/synthetic/demo --version v1.0-mini --split mini_val [--frames 40] \\
        [--json OUT.json]

The targets are those of the depth supervision (``perception.models.camera.depth``: per feature
pixel, the bin of the nearest keyframe LiDAR point), on unaugmented frames. Printed over all such
pixels of all cameras: the cross-entropy (uniform guess: ln D), the share of pixels whose most
likely bin is the target's (exact, and within +-2 bins), and of the distribution's mean depth the
mean absolute error (m), the mean relative error and the share within 25 % (delta < 1.25 of the
depth-estimation literature). A model trained without depth supervision shows what detection
alone teaches the lift. docs/results.md uses it.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch
from torch import Tensor


def probe(cfg, checkpoint, dataroot, version, split, *, frames=0, threads=2) -> dict:
    from perception.data.augment import AugmentedDataset
    from perception.data.nuscenes import NuScenesDataset
    from perception.engine.probe import load_model, spread
    from perception.models.camera.depth import IGNORE, lidar_depth_targets
    from perception.structures.batch import collate

    if "camera" not in cfg.model.modalities:
        raise SystemExit("the model has no camera branch")
    model = load_model(cfg, checkpoint, threads)
    lift = model.encoders["camera"].lift
    base = NuScenesDataset(dataroot, version, split, sweeps=1, radar_sweeps=1,
                           modalities=("lidar", "camera"))
    dataset = AugmentedDataset(base, None, cfg.model.camera.image_size)
    picks = spread(len(dataset), frames)
    logits_px, targets_px = [], []
    with torch.no_grad():
        for i in picks:
            frame = dataset[i]
            if frame.lidar is None or not frame.cameras:
                continue
            batch = collate([frame])
            logits = model(batch, modalities=("camera",)).depth_logits      # (1, N, D, h, w)
            targets = lidar_depth_targets(
                batch.lidar_points, batch.lidar_num_pasted, time_lag_col=None,
                intrinsics=batch.intrinsics, ego_T_camera=batch.ego_T_camera,
                img_aug=batch.img_aug, camera_mask=batch.camera_mask,
                feature_shape=tuple(logits.shape[-2:]), stride=lift.stride,
                depth_bins=lift.depth_bins)
            sel = targets != IGNORE                                          # (1, N, h, w)
            logits_px.append(logits.permute(0, 1, 3, 4, 2)[sel])             # (P, D)
            targets_px.append(targets[sel])
    if not logits_px:
        raise SystemExit(f"{dataroot} {split}: no frame with both cameras and LiDAR")
    out = summarize(torch.cat(logits_px), torch.cat(targets_px), lift.depths)
    out["frames"] = len(picks)
    return out


def summarize(logits: Tensor, targets: Tensor, centres: Tensor) -> dict:
    """Depth metrics of (P, D) logits against (P,) target bins with (D,) bin centres (m)."""
    logp = logits.double().log_softmax(-1)
    best = logp.argmax(-1)
    mean = (logp.exp() * centres.double()).sum(-1)
    true = centres.double()[targets]
    return {
        "pixels": len(targets), "bins": len(centres), "uniform_ce": math.log(len(centres)),
        "ce": float(-logp.gather(1, targets[:, None]).mean()),
        "argmax_exact": float((best == targets).double().mean()),
        "argmax_within_2_bins": float(((best - targets).abs() <= 2).double().mean()),
        "mean_abs_err_m": float((mean - true).abs().mean()),
        "abs_rel": float(((mean - true).abs() / true).mean()),
        "delta_1_25": float((torch.maximum(mean / true, true / mean) < 1.25).double().mean()),
    }


def main(argv=None) -> int:
    from perception.engine.probe import add_probe_arguments, load_experiment, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_arguments(ap)
    args = ap.parse_args(argv)
    cfg = load_experiment(args.config)
    r = probe(cfg, args.checkpoint, args.dataroot, args.version, args.split,
              frames=args.frames, threads=args.threads)
    print(f"{r['pixels']} pixels with a LiDAR target in {r['frames']} frames, {r['bins']} bins")
    print(f"cross-entropy {r['ce']:.3f} (uniform {r['uniform_ce']:.3f}); most likely bin exact "
          f"{r['argmax_exact']:.3f}, within 2 bins {r['argmax_within_2_bins']:.3f}; mean depth: "
          f"abs err {r['mean_abs_err_m']:.2f} m, abs rel {r['abs_rel']:.3f}, "
          f"delta<1.25 {r['delta_1_25']:.3f}")
    write_json(args.json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
