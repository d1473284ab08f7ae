"""Where the GPU time goes: torch.profiler tables for the end-to-end detector and voxelize, on the
lent GPU machine (no devkit there: the frames come from `perception bench --save-frames`).

    python tools/gpu_profile.py e2e configs/nuscenes/fusion.yaml .gpu/frames/nuscenes.pt \\
        [--checkpoint CK] [--runs 5] [--json OUT]
    python tools/gpu_profile.py voxelize [--runs 20]
    python tools/gpu_profile.py syncs configs/nuscenes/fusion.yaml .gpu/frames/nuscenes.pt \\
        [--checkpoint CK] [--json OUT]

e2e: ``stage_latency`` (the bench's per-stage figures, fp16 on CUDA), then the profiler over
``--runs`` frames: the 25 ops with the most GPU time, and the host synchronisations (device-to-
host copies and stream syncs) one frame makes, which stall the GPU between kernels.
voxelize: the bench's 300k-point input, the Triton path and the torch reference timed
alternately, then the profiler's table for the Triton path.
syncs: where one frame (forward + decode) makes the host wait for the GPU: on CUDA every call
that ``torch.cuda.set_sync_debug_mode("warn")`` reports, with the Python lines that led to it; on
CPU (a rehearsal) the calls that would wait on CUDA because their output size depends on the data
(``nonzero``, ``.item()``, boolean indexing, ``unique``, ...), found by a dispatch mode. Counted by
the innermost lines of perception/ and of the libraries it calls (spconv-triton).
``PERCEPTION_SPCONV_TRITON_CONFIGS`` applies as everywhere (0: spconv-triton's full autotuning).
``--device cpu`` rehearses the script here (voxelize then times spconv's CPU path).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perception.bench import sync_device  # noqa: E402

SYNC_OPS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "cudaMemcpy")


def _activities(device: str):
    from torch.profiler import ProfilerActivity

    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])


def _table(prof, runs: int, rows: int, device: str) -> str:
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows,
                                     max_name_column_width=60) + \
        f"\n(over {runs} runs; divide totals by {runs} for one)"


def _syncs(prof, runs: int) -> dict:
    out = {}
    for e in prof.key_averages():
        if e.key in SYNC_OPS:
            out[e.key] = e.count / runs
    return out


def _frame_runner(cfg, batch, checkpoint: str | None, device: str):
    """A function that runs the config's model (with the checkpoint's weights, if given) on the
    frame, forward and decode, fp16 autocast on CUDA, and waits for the device."""
    from perception.models import build_model

    model = build_model(cfg.model)
    if checkpoint:
        from perception.engine.checkpoint import model_state

        model.load_state_dict(model_state(checkpoint))
    model.to(device).eval()
    batch = batch.to(device)

    def run():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16,
                                             enabled=device == "cuda"):
            dets = model.head.decode(model(batch).heads)
        sync_device(device)
        return dets

    return run


def profile_e2e(config: str, frame: str, checkpoint: str | None, runs: int,
                device: str) -> dict:
    from torch.profiler import profile

    from perception.config import load_config
    from perception.engine.latency import stage_latency
    from perception.models.config import ExperimentConfig

    cfg = load_config(config, ExperimentConfig)
    batch = torch.load(frame, weights_only=False)
    t0 = time.perf_counter()
    lat = stage_latency(cfg, None, device, repeats=20 if device == "cuda" else 3,
                        checkpoint=checkpoint, batch=batch)
    lat["seconds"] = time.perf_counter() - t0
    print(json.dumps({"config": config, "checkpoint": checkpoint, **lat}, indent=1), flush=True)

    run = _frame_runner(cfg, batch, checkpoint, device)
    run()
    n_dets = len(run()[0].scores)
    with profile(activities=_activities(device)) as prof:
        for _ in range(runs):
            run()
    print(_table(prof, runs, 25, device), flush=True)
    syncs = _syncs(prof, runs)
    print("host synchronisations per frame:", syncs, f"detections: {n_dets}", flush=True)
    return {"latency": lat, "syncs_per_frame": syncs, "detections": n_dets}


def profile_voxelize(runs: int, device: str) -> dict:
    from torch.profiler import profile

    from perception.bench import lidar_sweeps, time_pair_ms
    from perception.ops.voxelize import voxelize

    vs, pr = (0.075, 0.075, 0.2), (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0)
    pts = lidar_sweeps().to(device)
    ours = "triton" if device == "cuda" else "spconv"
    calls = {b: (lambda b=b: voxelize(pts, vs, pr, 10, 160_000, backend=b))
             for b in (ours, "reference")}
    times = time_pair_ms(calls[ours], calls["reference"], device, runs)
    med = dict(zip((ours, "reference"), times))
    print("voxelize median ms:", med, flush=True)
    with profile(activities=_activities(device)) as prof:
        for _ in range(runs):
            calls[ours]()
        sync_device(device)
    print(_table(prof, runs, 15, device), flush=True)
    syncs = _syncs(prof, runs)
    print("host synchronisations per call:", syncs, flush=True)
    return {"median_ms": med, "syncs_per_call": syncs}


# Ops whose output shape or value the host needs before it can go on: on CUDA each waits for the
# GPU's queue (the CPU rehearsal of `syncs` counts them).
DATA_DEPENDENT_OPS = {"nonzero", "_local_scalar_dense", "masked_select", "unique", "_unique2",
                      "unique_consecutive", "unique_dim", "repeat_interleave", "equal",
                      "is_nonzero", "masked_scatter", "_assert_async"}


def _where(stack, depth: int = 3) -> str:
    """The innermost ``depth`` frames of our code or of the libraries it calls (not torch's)."""
    own = [f for f in stack if ("/perception/" in f.filename or "spconv_triton" in f.filename
                                or "/tools/" in f.filename) and "gpu_profile" not in f.filename]
    parts = []
    for f in own[::-1][:depth]:
        path = f.filename
        for root in ("/perception/", "/spconv_triton/"):
            if root in path:
                path = root.strip("/") + "/" + path.split(root, 1)[1]
                break
        parts.append(f"{path}:{f.lineno}")
    return " < ".join(parts) or "?"


def find_syncs(config: str, frame: str, checkpoint: str | None, device: str) -> dict:
    import collections
    import traceback
    import warnings

    from perception.config import load_config
    from perception.models.config import ExperimentConfig

    cfg = load_config(config, ExperimentConfig)
    run = _frame_runner(cfg, torch.load(frame, weights_only=False), checkpoint, device)
    run()   # compiling and autotuning synchronise too: not counted
    found: collections.Counter = collections.Counter()
    if device == "cuda":
        def record(message, category, filename, lineno, file=None, line=None):
            if "synchroniz" in str(message).lower():
                found[(str(message).split("\n")[0][:60], _where(traceback.extract_stack()))] += 1

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record      # restored by catch_warnings
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run()
            finally:
                torch.cuda.set_sync_debug_mode("default")
    else:
        from torch.utils._python_dispatch import TorchDispatchMode

        class DataDependent(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                if name in DATA_DEPENDENT_OPS:
                    found[(name, _where(traceback.extract_stack()))] += 1
                return func(*args, **(kwargs or {}))

        with DataDependent():
            run()
    rows = sorted(found.items(), key=lambda kv: (-kv[1], kv[0][1]))
    print(f"{sum(found.values())} host waits in one frame ({device}), by place:")
    for (what, where), n in rows:
        print(f"{n:5d}  {where}  [{what}]")
    return {"total": sum(found.values()),
            "places": [{"count": n, "where": where, "what": what} for (what, where), n in rows]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("e2e")
    e.add_argument("config")
    e.add_argument("frame")
    e.add_argument("--checkpoint", default=None)
    e.add_argument("--runs", type=int, default=5)
    e.add_argument("--json", default=None)
    v = sub.add_parser("voxelize")
    v.add_argument("--runs", type=int, default=20)
    v.add_argument("--json", default=None)
    y = sub.add_parser("syncs")
    y.add_argument("config")
    y.add_argument("frame")
    y.add_argument("--checkpoint", default=None)
    y.add_argument("--json", default=None)
    for q in (e, v, y):
        q.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_profile: --device cuda, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    if a.what == "e2e":
        res = profile_e2e(a.config, a.frame, a.checkpoint, a.runs, a.device)
    elif a.what == "syncs":
        res = find_syncs(a.config, a.frame, a.checkpoint, a.device)
    else:
        res = profile_voxelize(a.runs, a.device)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
