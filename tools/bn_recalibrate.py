"""Re-estimate BatchNorm statistics on unaugmented frames of the sensors a model is tested with.

    python tools/bn_recalibrate.py configs/synthetic/fusion.yaml CHECKPOINT OUT.pt \\
        --dataroot data/synthetic/demo --version v1.0-mini --split mini_train [--frames 160] \\
        [--modalities camera,lidar,radar [--modalities camera,radar]] [--after-fuser]

Training normalises with statistics gathered over augmented frames, a quarter of whose sensors
modality dropout removed, and, with ``fusion.subset_loss``, over a second pass of each frame
without LiDAR through the fuser's context network and the head; evaluation sees none of that.
This resets the BatchNorms' running means and variances, runs the model forward (no gradients,
no dropout, no subset passes) with ``--modalities`` (default: every sensor the model has) over
an even spread of the split's frames as they come from the reader, keeps the cumulative average
of the batch statistics, and writes a model file like ``perception export`` (float16 weights,
the checkpoint's config) that ``perception eval --checkpoint`` reads. ``--after-fuser`` re-
estimates only the layers the subset passes share (the fuser's context network and the heads),
keeping the encoders' and the per-sensor projections' statistics. With
``fusion.subset_norm_stats`` in the config, frames whose sensors lie within a ``subset_loss``
subset fill that subset's statistics and the others the layers' own: ``--modalities
camera,lidar,radar --modalities camera,radar`` estimates both (each over ``--frames`` frames; a
file trained without them gets them so). docs/results.md has the measured effects ("BatchNorm
statistics without augmentation or dropout", "BatchNorm statistics per sensor set").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--split", default="mini_train")
    ap.add_argument("--frames", type=int, default=160, help="an even spread of N samples")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modalities", action="append",
                    help="sensors of the frames, e.g. camera,radar (default: all the model has); "
                         "again for another set, each over --frames frames")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. model.fusion.subset_norm_stats=true (the "
                         "written file records the checkpoint's config with it)")
    ap.add_argument("--after-fuser", action="store_true",
                    help="re-estimate only the fuser's context network and the heads")
    args = ap.parse_args(argv)

    from perception.config import apply_overrides, config_from_dict, config_to_dict, load_config
    from perception.engine.checkpoint import atomic_save, load_checkpoint
    from perception.engine.inference import build_eval_loader
    from perception.models import ExperimentConfig, build_model
    from perception.structures.batch import collate

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, ExperimentConfig, args.overrides)
    state = load_checkpoint(args.checkpoint)
    model = build_model(cfg.model)
    model.load_state_dict(model.with_missing_stats(state["model"]))
    sets = [m.split(",") for m in args.modalities or [",".join(cfg.model.modalities)]]
    for mods in sets:
        unknown = sorted(set(mods) - set(cfg.model.modalities))
        if unknown or not all(mods):
            print(f"bn_recalibrate: --modalities {','.join(mods)}: the model has "
                  f"{list(cfg.model.modalities)}", file=sys.stderr)
            return 2
    roots = ([model.fuser.context, model.head, *model.subset_heads.values()] if args.after_fuser
             else [model])
    norms = [m for r in roots for m in r.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for key in dict.fromkeys(model.stats_key(mods) for mods in sets):
        with model.norm_stats(key):        # each set's statistics: the layers' own or a subset's
            for m in norms:
                m.reset_running_stats()
                m.momentum = None          # cumulative average over all the frames
    model.eval()
    for m in norms:
        m.train()                  # only these gather statistics; every other layer as at test
    model.modality_dropout = 0.0
    dataset = build_eval_loader(cfg, args.dataroot, args.version, args.split,
                                cfg.model.modalities).dataset
    picks = np.linspace(0, len(dataset) - 1, min(args.frames, len(dataset))).round().astype(int)
    with torch.no_grad():
        for mods in sets:
            for i in picks.tolist():
                model(collate([dataset[i]]), modalities=mods)
    state["model"] = {k: (v.half() if v.is_floating_point() else v).contiguous()
                      for k, v in model.state_dict().items()}
    state["kind"], state["half"] = "model", True
    if args.overrides and state.get("config") is not None:
        # The training run's config (data, schedule, seed: what made the weights), overridden.
        state["config"] = config_to_dict(config_from_dict(
            ExperimentConfig, apply_overrides(state["config"], args.overrides)))
    for k in ("optimizer", "scheduler", "scaler", "rng"):
        state.pop(k, None)
    atomic_save(state, args.out)
    print(f"{len(norms)} BatchNorm layers re-estimated on {len(picks)} frames of "
          f"{args.dataroot} {args.split} ({'; '.join(','.join(m) for m in sets)}): "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
