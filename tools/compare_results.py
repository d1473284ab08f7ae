"""Two models' results on one val split, compared by a paired scene bootstrap.

    python tools/compare_results.py A B --dataroot D --version V --split S \\
        [--resamples 200] [--seed 0] [--level 0.9] [--json OUT.json]

A and B are results_nusc.json files or the `perception eval` output folders holding them. For
NDS, mAP, the five TP errors and each class's AP it prints A, B, A - B, the central interval of
A - B over the resamples (each draws the split's scenes with replacement and scores both models
on the draw; perception/evaluation/bootstrap.py) and the share of draws in which A is better.
A difference whose interval holds 0 is one the val set cannot tell from its own noise. It says
nothing about the noise of retraining (docs/results.md: "Three seeds of the fusion and LiDAR
models", "A 24-scene val set to rank the models on").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perception.evaluation.bootstrap import ERROR_NAMES


def results_path(p: str) -> Path:
    path = Path(p)
    if path.is_dir():
        path = path / "results_nusc.json"
    if not path.is_file():
        raise FileNotFoundError(f"{p}: no results_nusc.json there")
    return path


def format_report(report: dict, name_a: str, name_b: str) -> str:
    pct = round(report["level"] * 100)
    lines = [f"{report['scenes']} scenes, {report['samples']} samples, "
             f"{report['resamples']} paired scene resamples; A = {name_a}, B = {name_b}",
             "",
             f"| metric | A | B | A - B | {pct} % interval | A better in |",
             "|---|---|---|---|---|---|"]
    for key, m in report["metrics"].items():
        label = {"nd_score": "NDS", "mean_ap": "mAP"}.get(key) or ERROR_NAMES.get(key) \
            or f"{key[3:]} AP"
        lines.append(f"| {label} | {m['a']:.3f} | {m['b']:.3f} | {m['diff']:+.3f} | "
                     f"{m['low']:+.3f} .. {m['high']:+.3f} | {m['a_better'] * 100:.0f} % |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="results_nusc.json (or its folder) of model A")
    ap.add_argument("b", help="results_nusc.json (or its folder) of model B")
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--level", type=float, default=0.9, help="interval's coverage (0.9)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args(argv)

    from nuscenes import NuScenes

    from perception.evaluation.bootstrap import paired_bootstrap

    try:
        a, b = results_path(args.a), results_path(args.b)
    except FileNotFoundError as e:
        print(f"compare_results: {e}", file=sys.stderr)
        return 2
    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    report = paired_bootstrap(str(a), str(b), nusc, args.split, resamples=args.resamples,
                              seed=args.seed, level=args.level)
    print(format_report(report, args.a, args.b))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
