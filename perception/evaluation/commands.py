"""Argparse glue for `perception metrics` and `perception bench --only eval`.

Nothing heavy is imported here at module level: importing the devkit's evaluation code takes
seconds, and `perception --help` must stay instant. The work is imported when a command runs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BACKENDS = ("fast", "devkit", "check")


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `perception metrics`."""
    parser.add_argument("--results", required=True, type=Path, help="nuScenes results JSON")
    parser.add_argument("--dataroot", required=True, type=Path, help="nuScenes dataset root")
    parser.add_argument("--version", required=True, help="e.g. v1.0-trainval, v1.0-mini")
    parser.add_argument("--split", required=True, help="e.g. val, mini_val")
    parser.add_argument("--backend", choices=BACKENDS, default="fast",
                        help="fast (vectorized, default), devkit (DetectionEval) or check (both; "
                             "fails on any difference > 1e-9)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for metrics_summary.json and metrics_details.json")
    parser.add_argument("--config", default=None,
                        help="detection config name or JSON path (default detection_cvpr_2019)")


def metrics_command(args: argparse.Namespace) -> int:
    """Run `perception metrics`; prints the devkit's headline table. Returns the exit status."""
    from .metrics import MetricsMismatchError, evaluate, format_summary

    start = time.perf_counter()
    timings: dict = {}
    try:
        summary = evaluate(args.results, args.dataroot, args.version, args.split, args.out,
                           backend=args.backend, config=args.config, timings=timings)
    except MetricsMismatchError as e:
        print(f"metrics: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    stages = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in timings.items())
    print(f"metrics ({args.backend}): wrote {Path(args.out) / 'metrics_summary.json'} in "
          f"{time.perf_counter() - start:.1f} s" + (f" (fast backend: {stages})" if stages else ""))
    return 0


def add_eval_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the eval benchmark (`perception bench --only eval`)."""
    parser.add_argument("--samples", type=int, default=6019, help="samples (nuScenes val: 6019)")
    parser.add_argument("--preds-per-sample", type=int, default=500, help="predictions per sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devkit-samples", type=int, default=1000,
                        help="run the devkit on the first N samples and scale its time linearly "
                             "(its cost is per sample); 0 = all samples (10+ minutes)")
    parser.add_argument("--load-samples", type=int, default=300,
                        help="samples used to time results loading (scaled)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours (the best is reported)")


def eval_bench(args: argparse.Namespace, verbose: bool = True) -> dict:
    """Run the eval benchmark from parsed options; the dict goes under "eval" in the JSON."""
    from .bench import run_eval_bench

    return run_eval_bench(samples=args.samples, preds_per_sample=args.preds_per_sample, seed=args.seed,
                          devkit_samples=args.devkit_samples, load_samples=args.load_samples,
                          repeat=args.repeat, verbose=verbose)
