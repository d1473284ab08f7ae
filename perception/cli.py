"""`perception <command>`: the one entry point; tools/*.py are thin wrappers around it.

Commands import what they need when they run, so `perception --help` and `import perception`
stay fast and work without a GPU or a compiler.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x360, got {text!r}")
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"image size {text!r} is too small (at least 16x16)")
    return w, h


# ----------------------------------------------------------------------------------------------
# synth
# ----------------------------------------------------------------------------------------------
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="generate a synthetic world written as a nuScenes-format dataset",
        description="Generate a complete nuScenes-format dataset (13 tables, samples/, sweeps/, "
                    "maps/) from a synthetic world. Values come from the defaults of SynthConfig, "
                    "then --config, then --set, then the explicit flags.")
    p.add_argument("--out", required=True, type=Path, help="dataset root to write")
    p.add_argument("--config", type=Path, help="YAML file mapping onto SynthConfig")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a SynthConfig field, e.g. --set actor_density=1.5")
    p.add_argument("--version", choices=["v1.0-mini", "v1.0-trainval"])
    p.add_argument("--seed", type=int)
    p.add_argument("--scenes", type=int, help="number of scenes (default: all 10 for v1.0-mini)")
    p.add_argument("--val-scenes", type=int,
                   help="how many of the scenes are val scenes (default: the devkit split "
                        "lists' ratio); --scenes 24 --val-scenes 24 makes a 960-sample val set")
    p.add_argument("--duration", type=float, help="seconds per scene (default 20)")
    p.add_argument("--image-size", type=_parse_size, help="camera image WIDTHxHEIGHT")
    p.add_argument("--workers", type=int, help="parallel processes (one scene each)")
    p.add_argument("--no-sweeps", action="store_true",
                   help="write keyframe files only (sweep records stay, like a keyframe download)")
    p.add_argument("--reuse", action="store_true",
                   help="do nothing when OUT already holds a dataset made with the same config")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from perception.config import config_to_dict, load_config
    from perception.data.synthetic import SynthConfig, generate

    overrides = list(args.overrides)
    flag_values = {"version": args.version, "seed": args.seed, "scenes": args.scenes,
                   "val_scenes": args.val_scenes, "duration_s": args.duration}
    for key, value in flag_values.items():
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.image_size is not None:
        overrides += [f"image_width={args.image_size[0]}", f"image_height={args.image_size[1]}"]
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    if args.no_sweeps:
        overrides.append("sweeps=false")
    cfg = load_config(args.config, SynthConfig, overrides)

    if args.reuse and _same_synth_config(args.out, config_to_dict(cfg)):
        print(f"synth: {args.out} already holds this dataset (synthetic_config.yaml matches); reusing it")
        return 0
    start = time.perf_counter()
    generate(args.out, cfg)
    print(f"synth: wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def _same_synth_config(out: Path, wanted: dict) -> bool:
    import yaml

    path = out / "synthetic_config.yaml"
    if not path.is_file() or not (out / wanted["version"]).is_dir():
        return False
    saved = yaml.safe_load(path.read_text()) or {}
    # The number of worker processes does not change what is written; keys that are not
    # SynthConfig fields (e.g. the scene names the generator records) are derived from it.
    keys = [k for k in wanted if k != "workers"]
    # Fields added later whose default writes what older datasets hold: absent = the default.
    for key, default in _SYNTH_KEYS_ADDED_LATER.items():
        saved.setdefault(key, default)
    return all(k in saved and saved[k] == wanted[k] for k in keys)


_SYNTH_KEYS_ADDED_LATER = {"val_scenes": None}


# ----------------------------------------------------------------------------------------------
# info
# ----------------------------------------------------------------------------------------------
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarize a nuScenes-format dataset (real or synthetic)")
    p.add_argument("--dataroot", required=True, type=Path)
    p.add_argument("--version", required=True)
    p.add_argument("--json", type=Path, help="also write the summary as JSON")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from perception.data.synthetic import format_summary, summarize

    summary = summarize(args.dataroot, args.version)
    print(format_summary(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


# ----------------------------------------------------------------------------------------------
# render
# ----------------------------------------------------------------------------------------------
def _add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="draw one sample: BEV (LiDAR, radar, boxes) and the cameras")
    p.add_argument("--dataroot", required=True, type=Path)
    p.add_argument("--version", required=True)
    p.add_argument("--split", default=None, help="devkit split name (default: every scene)")
    p.add_argument("--index", type=int, default=0, help="sample index within the split")
    p.add_argument("--sweeps", type=int, default=10, help="LiDAR sweeps to accumulate")
    p.add_argument("--radar-sweeps", type=int, default=6)
    p.add_argument("--out", required=True, type=Path, help="folder for the PNG")
    p.set_defaults(func=_cmd_render)


def _cmd_render(args: argparse.Namespace) -> int:
    from perception.data import NuScenesDataset
    from perception.vis import render_sample

    ds = NuScenesDataset(args.dataroot, args.version, args.split, sweeps=args.sweeps,
                         radar_sweeps=args.radar_sweeps)
    if not 0 <= args.index < len(ds):
        print(f"render: --index {args.index} is out of range: split {args.split!r} has "
              f"{len(ds)} samples", file=sys.stderr)
        return 2
    frame = ds[args.index]
    path = render_sample(frame, args.out / f"sample_{frame.token}.png")
    print(f"render: wrote {path}")
    return 0


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------
def _add_metrics(sub: argparse._SubParsersAction) -> None:
    from perception.evaluation.commands import add_metrics_arguments, metrics_command

    p = sub.add_parser(
        "metrics", help="nuScenes detection metrics of a results JSON (fast, devkit, or both)",
        description="Writes OUT/metrics_summary.json in the devkit's format. --backend check "
                    "computes both and fails on any difference above 1e-9.")
    add_metrics_arguments(p)
    p.set_defaults(func=metrics_command)


# ----------------------------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------------------------
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="time the hot-path ops against their baselines (medians, one run)",
        description="Each entry compares our op with its baseline on nuScenes-scale inputs in the "
                    "same run, so the ratios hold on a noisy machine. Entries: voxelize, bev_pool, "
                    "nms, eval, end_to_end.")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--only", default=None, help="comma-separated subset of the entries")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="write results here")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per measurement")
    p.add_argument("--frames", type=Path, default=None,
                   help="end_to_end: read its input frames from this folder (see --save-frames) "
                        "instead of generating and loading them, which needs the devkit")
    p.add_argument("--save-frames", type=Path, default=None,
                   help="write the end_to_end input frames to this folder and exit")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from perception.bench import failed, run_bench, save_end_to_end_frames

    if args.save_frames is not None:
        for path in save_end_to_end_frames(str(args.save_frames)):
            print(f"bench: wrote {path}")
        return 0
    results = run_bench(device=args.device, only=args.only,
                        json_out=None if args.json_out is None else str(args.json_out),
                        repeats=args.repeats,
                        frames_dir=None if args.frames is None else str(args.frames))
    bad = failed(results)
    if bad:
        print(f"bench: {', '.join(bad)} failed (the error is in the table and the JSON)",
              file=sys.stderr)
    return 1 if bad else 0


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train the detector (AdamW, one-cycle/cosine, checkpoints, exact resume)",
        description="Train build_model(cfg.model) for train.max_iters iterations. The work dir gets "
                    "config.yaml, log.csv, iter_N.pt and latest.pt (written atomically). Values: "
                    "the config file, then --set, then --dataroot/--version.")
    p.add_argument("config", type=Path, help="experiment YAML (ExperimentConfig)")
    p.add_argument("--work-dir", required=True, type=Path, help="output folder")
    p.add_argument("--dataroot", help="dataset root (overrides data.root)")
    p.add_argument("--version", help="table version (overrides data.version)")
    p.add_argument("--resume", action="store_true", help="continue exactly from WORK_DIR/latest.pt")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.max_iters=2000")
    p.add_argument("--stop-after", type=int, default=None, metavar="ITER",
                   help="stop (after a checkpoint) at this iteration; --resume continues")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (1 is fastest on a busy shared CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from perception.config import load_config
    from perception.engine.train import train
    from perception.models import ExperimentConfig

    overrides = list(args.overrides)
    if args.dataroot:
        overrides.append(f"data.root={args.dataroot}")
    if args.version:
        overrides.append(f"data.version={args.version}")
    cfg = load_config(args.config, ExperimentConfig, overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = train(cfg, args.work_dir, resume=args.resume, stop_after=args.stop_after,
                   device=args.device, progress=not args.no_progress)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items())
    print(f"train: iteration {result.iteration}/{cfg.train.max_iters}, "
          f"{result.seconds_per_iteration:.2f} s/iteration; {losses}")
    print(f"train: checkpoint {result.checkpoint}")
    return 0


# ----------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="run a checkpoint over a split: results_nusc.json + nuScenes metrics",
        description="Inference over the split, DIR/results_nusc.json in the submission format "
                    "(global frame), then the detection metrics (DIR/metrics_summary.json) and "
                    "the per-class table.")
    p.add_argument("config", type=Path, help="the experiment YAML the checkpoint was trained with")
    p.add_argument("--checkpoint", required=True, type=Path, help="iter_N.pt / latest.pt")
    p.add_argument("--dataroot", required=True, type=Path)
    p.add_argument("--version", required=True)
    p.add_argument("--split", required=True, help="devkit split, e.g. val, mini_val")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--modalities", default=None,
                   help="comma-separated subset of the model's sensors, e.g. camera,radar")
    p.add_argument("--metrics", choices=["fast", "devkit", "check", "none"], default="fast",
                   help="metrics backend (perception.evaluation); none: results only")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--bev-dir", type=Path, default=None,
                   help="also write a bird's-eye-view PNG per frame here (GT thick, detections thin)")
    p.add_argument("--bev-min-score", type=float, default=0.3,
                   help="detections drawn in the --bev-dir pictures score at least this")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from perception.config import load_config
    from perception.engine.inference import evaluate_checkpoint
    from perception.models import ExperimentConfig

    cfg = load_config(args.config, ExperimentConfig, args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    mods = None
    if args.modalities:
        mods = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    start = time.perf_counter()
    try:
        summary = evaluate_checkpoint(
            cfg, args.checkpoint, args.dataroot, args.version, args.split, args.out,
            modalities=mods, metrics=args.metrics, device=args.device,
            batch_size=args.batch_size, num_workers=args.workers, bev_dir=args.bev_dir,
            bev_min_score=args.bev_min_score)
    except ValueError as e:
        print(f"eval: {e}", file=sys.stderr)
        return 2
    print(f"eval: wrote {args.out / 'results_nusc.json'}")
    if args.bev_dir is not None:
        print(f"eval: wrote {len(list(args.bev_dir.glob('*.png')))} bird's-eye-view pictures to "
              f"{args.bev_dir}")
    if summary:
        from perception.evaluation import format_summary

        print(format_summary(summary))
        print(f"eval: wrote {args.out / 'metrics_summary.json'}")
    print(f"eval: {time.perf_counter() - start:.1f} s")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="training checkpoint -> weights-only model file (fp16 by default)",
        description="Keep the model weights, config and iteration of a training checkpoint; drop "
                    "the optimizer and RNG state. `perception eval --checkpoint` reads the result.")
    p.add_argument("checkpoint", type=Path, help="iter_N.pt / latest.pt of a training run")
    p.add_argument("--out", required=True, type=Path, help="the model file to write")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights (default float16)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from perception.engine.checkpoint import export_model

    if not args.checkpoint.is_file():
        print(f"export: no such checkpoint {args.checkpoint}", file=sys.stderr)
        return 2
    try:
        path = export_model(args.checkpoint, args.out, half=not args.fp32)
    except ValueError as e:
        print(f"export: {e}", file=sys.stderr)
        return 2
    mb = path.stat().st_size / 2**20
    print(f"export: wrote {path} ({mb:.1f} MB, {'float32' if args.fp32 else 'float16'} weights)")
    return 0


# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perception",
        description="Camera + LiDAR + radar BEV fusion perception (nuScenes format).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth(sub)
    _add_info(sub)
    _add_render(sub)
    _add_metrics(sub)
    _add_bench(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_export(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from perception.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"perception {args.command}: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
