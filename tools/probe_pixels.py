"""What a checkpoint's painter pixel head reads off the images, against the LiDAR and boxes.

    python tools/probe_pixels.py configs/synthetic/fusion.yaml CHECKPOINT \\
        --dataroot data/synthetic/demo_val --version v1.0-mini --split mini_val [--frames 40] \\
        [--json OUT.json]

The targets are those of the pixel loss (``perception.models.camera.paint.pixel_targets``: per
camera feature pixel, the class of the box the nearest keyframe LiDAR point lies in, 0 for
background, and that box's yaw relative to the ray), on unaugmented frames. Printed over all
such pixels: the share whose most likely class is the target's (all pixels, and object pixels
only), and on object pixels the heading error of the predicted relative yaw: its median, the
share within 45 degrees and the share turned round (more than 135 degrees off), which is what
says whether the cameras see which way an object faces. docs/results.md uses it.
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
    from perception.models.camera.paint import IGNORE, pixel_targets
    from perception.structures.batch import collate

    model = load_model(cfg, checkpoint, threads)
    if model.painter is None or model.painter.pixel_head is None:
        raise SystemExit("the model has no painter pixel head (camera.pixel_weight)")
    base = NuScenesDataset(dataroot, version, split, sweeps=cfg.data.lidar_sweeps,
                           radar_sweeps=1, modalities=("lidar", "camera"))
    dataset = AugmentedDataset(base, None, cfg.model.camera.image_size)
    picks = spread(len(dataset), frames)
    logits_px, classes_px, yaw_px = [], [], []
    with torch.no_grad():
        for i in picks:
            frame = dataset[i]
            if frame.lidar is None or not frame.cameras or frame.gt is None:
                continue
            batch = collate([frame])
            logits = model(batch, modalities=("camera", "lidar")).pixel_logits  # (1, N, C, h, w)
            lag = (batch.lidar_fields.index("time_lag") if "time_lag" in batch.lidar_fields
                   else None)
            classes, yaw = pixel_targets(
                batch.lidar_points, torch.zeros(1, dtype=torch.int64), batch.gt,
                time_lag_col=lag, intrinsics=batch.intrinsics, ego_T_camera=batch.ego_T_camera,
                img_aug=batch.img_aug, camera_mask=batch.camera_mask,
                feature_shape=tuple(logits.shape[-2:]), stride=model.painter.stride)
            sel = classes != IGNORE                                           # (1, N, h, w)
            logits_px.append(logits.permute(0, 1, 3, 4, 2)[sel].float())
            classes_px.append(classes[sel])
            yaw_px.append(yaw.permute(0, 1, 3, 4, 2)[sel])
    if not logits_px:
        raise SystemExit(f"{dataroot} {split}: no frame with cameras, LiDAR and boxes")
    out = summarize(torch.cat(logits_px), torch.cat(classes_px), torch.cat(yaw_px))
    out["frames"] = len(picks)
    return out


def summarize(logits: Tensor, classes: Tensor, yaw: Tensor) -> dict:
    """Pixel metrics of (P, 1 + K + 2) logits against (P,) classes and (P, 2) sin/cos yaws."""
    best = logits[:, :-2].argmax(-1)
    obj = classes > 0
    pred = torch.atan2(logits[obj, -2], logits[obj, -1])
    true = torch.atan2(yaw[obj, 0], yaw[obj, 1])
    err = (torch.remainder(pred - true + math.pi, 2 * math.pi) - math.pi).abs()
    n_obj = int(obj.sum())
    return {
        "pixels": len(classes), "object_pixels": n_obj,
        "class_accuracy": float((best == classes).double().mean()),
        "object_class_accuracy": float((best[obj] == classes[obj]).double().mean())
        if n_obj else float("nan"),
        "heading_median_deg": float(err.median() * 180 / math.pi) if n_obj else float("nan"),
        "heading_within_45": float((err < math.pi / 4).double().mean())
        if n_obj else float("nan"),
        "heading_turned": float((err > 3 * math.pi / 4).double().mean())
        if n_obj else float("nan"),
    }


def main(argv=None) -> int:
    from perception.engine.probe import add_probe_arguments, load_experiment, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_arguments(ap)
    args = ap.parse_args(argv)
    cfg = load_experiment(args.config)
    r = probe(cfg, args.checkpoint, args.dataroot, args.version, args.split,
              frames=args.frames, threads=args.threads)
    print(f"{r['pixels']} pixels with a LiDAR target ({r['object_pixels']} on objects) in "
          f"{r['frames']} frames")
    print(f"class right: {r['class_accuracy']:.3f} of all, {r['object_class_accuracy']:.3f} of "
          f"object pixels; heading on objects: median error {r['heading_median_deg']:.1f} deg, "
          f"within 45 deg {r['heading_within_45']:.3f}, turned round {r['heading_turned']:.3f}")
    write_json(args.json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
