"""Time one training step (forward + loss + backward + AdamW) in float32 and in bfloat16 autocast
on this CPU, as a ratio measured in the same run.

    python tools/bench_train_step.py configs/synthetic/fusion.yaml [more configs ...] \\
        --dataroot data/synthetic/demo [--frames 4] [--rounds 2] [--threads 1] [--json OUT.json]

For each config: the model, the frames (an even spread of the training split, unaugmented,
every sensor present, loaded before timing), then ``rounds`` rounds of float32 and bfloat16
(``train.cpu_bf16``'s context) alternately; a round is one step per frame, the first step of a
round not timed. Per mode: the best round's mean step time. docs/training.md ("bfloat16 on CPU")
has the figures.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch


def bench(config: Path, dataroot: str, version: str, split: str, *, frames: int,
          rounds: int) -> dict:
    from perception.config import load_config
    from perception.engine.inference import build_eval_loader
    from perception.engine.train import cpu_autocast
    from perception.models import ExperimentConfig, build_model
    from perception.structures.batch import collate

    torch.manual_seed(0)
    cfg = load_config(config, ExperimentConfig, [])
    model = build_model(cfg.model)
    model.train()
    model.modality_dropout = 0.0
    dataset = build_eval_loader(cfg, dataroot, version, split, cfg.model.modalities).dataset
    picks = np.linspace(0, len(dataset) - 1, frames + 1).round().astype(int)
    batches = [collate([dataset[i]]) for i in picks.tolist()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    best = {"float32": float("inf"), "bfloat16": float("inf")}
    for _ in range(rounds):
        for mode in best:
            times = []
            for batch in batches:
                t = time.perf_counter()
                with cpu_autocast(mode == "bfloat16"):
                    out = model(batch)
                    loss = sum(model.loss(out, batch).values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                times.append(time.perf_counter() - t)
            best[mode] = min(best[mode], float(np.mean(times[1:])))
    return {"float32_s": round(best["float32"], 3), "bfloat16_s": round(best["bfloat16"], 3),
            "speedup": round(best["float32"] / best["bfloat16"], 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", type=Path, nargs="+")
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--split", default="mini_train")
    ap.add_argument("--frames", type=int, default=4, help="timed steps per round (one more runs "
                    "first, untimed)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from perception.engine.train import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        raise SystemExit("this CPU has no native bfloat16 (AVX512-BF16 or AMX): nothing to compare")
    torch.set_num_threads(args.threads)
    rows = {}
    print("| config | float32 s/step | bfloat16 s/step | speed-up |\n|---|---|---|---|")
    for config in args.configs:
        r = bench(config, args.dataroot, args.version, args.split, frames=args.frames,
                  rounds=args.rounds)
        rows[str(config)] = r
        print(f"| {config} | {r['float32_s']:.3f} | {r['bfloat16_s']:.3f} | "
              f"{r['speedup']:.2f}x |", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                         "threads": args.threads, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
