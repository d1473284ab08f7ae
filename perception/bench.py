"""`perception bench`: the hot-path ops against their published baselines, nuScenes scale.

Entries are a dict name -> function(device, repeats) -> dict of results; ``--only`` picks some.
Times are medians over repeats (after one warm-up call), in milliseconds. Peak memory is the
extra memory one call needs beyond its inputs: on CUDA ``torch.cuda.max_memory_allocated`` after
a reset; on CPU the kernel's resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) minus the resident set before the call. That counts every allocation the
call touches (torch, MKL, malloc), and nothing untouched.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import statistics
import time
import warnings
from datetime import datetime, timezone
from typing import Callable

import torch

from perception.structures.grid import BEVGrid


# ----------------------------------------------------------------------------- measuring
def sync_device(device: str):
    """Wait for the device (CUDA) to finish its queued work; nothing on CPU."""
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable, device: str, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in ms."""
    for _ in range(warmup):
        fn()
    sync_device(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync_device(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_pair_ms(fn_a: Callable, fn_b: Callable, device: str, repeats: int) -> tuple[float, float]:
    """Medians of fn_a and fn_b timed alternately, so load from other processes hits both alike
    (for ops whose ratio is near 1, where drift would otherwise decide the comparison)."""
    fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((fn_a, ta), (fn_b, tb)):
            sync_device(device)
            t0 = time.perf_counter()
            fn()
            sync_device(device)
            acc.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ta), statistics.median(tb)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_mb(fn: Callable, device: str) -> float | None:
    """Extra peak memory of one fn() call, MiB (see the module docstring)."""
    import gc

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        base = _status_kb("VmRSS")
        fn()
        return (_status_kb("VmHWM") - base) / 1024
    except OSError:  # no procfs (not Linux): report nothing rather than a wrong number
        return None


# ----------------------------------------------------------------------------- voxelize
def lidar_sweeps(n: int = 300_000, seed: int = 0) -> torch.Tensor:
    """(n, 5) x, y, z, intensity, time-lag: a 10-sweep-like cloud, dense near the car."""
    g = torch.Generator().manual_seed(seed)
    r = 1.5 + 60.0 * torch.rand(n, generator=g) ** 2
    a = torch.rand(n, generator=g) * 2 * math.pi
    z = -1.8 + 0.15 * torch.randn(n, generator=g)
    obj = torch.rand(n, generator=g) < 0.3  # points on objects/walls: spread in height
    z = torch.where(obj, -1.8 + 4.0 * torch.rand(n, generator=g), z)
    return torch.stack([r * torch.cos(a), r * torch.sin(a), z, torch.rand(n, generator=g),
                        torch.randint(0, 10, (n,), generator=g).float() * 0.05], dim=1)


def bench_voxelize(device: str, repeats: int) -> dict:
    from perception.ops.voxelize import voxelize

    vs, pr = (0.075, 0.075, 0.2), (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0)
    pts = lidar_sweeps().to(device)
    res = {"points": pts.shape[0], "voxel_size": vs, "range": pr, "max_points": 10,
           "max_voxels": 160_000}
    ours = lambda: voxelize(pts, vs, pr, 10, 160_000)  # noqa: E731
    res["num_voxels"] = int(ours()[0].shape[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from spconv.pytorch.utils import PointToVoxel
        gen = PointToVoxel(vsize_xyz=list(vs), coors_range_xyz=list(pr), num_point_features=5,
                           max_num_voxels=160_000, max_num_points_per_voxel=10,
                           device=torch.device(device))
        res["ours_ms"], res["baseline_ms"] = time_pair_ms(ours, lambda: gen(pts), device,
                                                          repeats)
        res["baseline"] = "spconv PointToVoxel (generator built once, outside the timing)"
    except ImportError:
        res["ours_ms"] = time_ms(ours, device, repeats)
        res["baseline_ms"] = None
        res["baseline"] = "spconv not installed"
    res["reference_ms"] = time_ms(
        lambda: voxelize(pts, vs, pr, 10, 160_000, backend="reference"), device, max(1, repeats // 2))
    if res["baseline_ms"]:
        res["speedup"] = res["baseline_ms"] / res["ours_ms"]
    return res


# ----------------------------------------------------------------------------- bev_pool
def camera_frustum(n_cam=6, d=118, h=32, w=88, seed=0) -> torch.Tensor:
    """(1, n_cam, d, h, w, 3) ego-frame frustum points of a surround rig, depth 1-60 m in 0.5 m
    bins, 70 deg horizontal / 40 deg vertical field of view per camera."""
    depths = 1.0 + 0.5 * torch.arange(d, dtype=torch.float32)
    u = torch.linspace(-1, 1, w) * math.tan(math.radians(35))
    v = torch.linspace(-1, 1, h) * math.tan(math.radians(20))
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    pts = []
    for k in range(n_cam):
        yaw = 2 * math.pi * k / n_cam
        # Camera looks along its forward axis; ray = forward + u * left + v * down (metres/m).
        fx, fy = math.cos(yaw), math.sin(yaw)
        lx, ly = -fy, fx
        ray = torch.stack([fx - uu * lx, fy - uu * ly, -vv], dim=-1)  # (h, w, 3)
        ray = ray / ray[..., :2].norm(dim=-1, keepdim=True)  # depth = horizontal distance
        p = depths[:, None, None, None] * ray[None]
        p[..., 2] += 1.6  # camera height above the ego origin
        pts.append(p)
    return torch.stack(pts)[None]


def lss_cumsum_pool(depth, feats, points, grid: BEVGrid):
    """The LSS baseline (Philion & Fidler 2020, "voxel_pooling" with the cumsum trick), written
    here from the published algorithm: materialise the depth x feature outer product, quantise
    every frustum point, drop out-of-range ones, sort by voxel rank, prefix-sum and difference at
    rank boundaries, scatter into the grid. Recomputes the geometry on every call, as LSS does.
    Returns (B, C, H, W)."""
    b, n, d, h, w = depth.shape
    c = feats.shape[-1]
    x = depth.unsqueeze(-1) * feats.unsqueeze(2)  # (B, N, D, H, W, C): the big tensor
    x = x.reshape(-1, c)
    lo = torch.tensor([grid.x_range[0], grid.y_range[0], grid.z_range[0]], device=depth.device)
    dx = torch.tensor([grid.cell_size, grid.cell_size, grid.voxel_z], device=depth.device)
    nx = torch.tensor([grid.width, grid.height, grid.depth], device=depth.device)
    geom = ((points.reshape(-1, 3) - lo) / dx).floor().long()
    batch_ix = torch.arange(b, device=depth.device).repeat_interleave(n * d * h * w)
    kept = ((geom >= 0) & (geom < nx)).all(1)
    x, geom, batch_ix = x[kept], geom[kept], batch_ix[kept]
    ranks = (geom[:, 0] * (grid.height * grid.depth * b) + geom[:, 1] * (grid.depth * b)
             + geom[:, 2] * b + batch_ix)
    sorts = ranks.argsort()
    x, geom, batch_ix, ranks = x[sorts], geom[sorts], batch_ix[sorts], ranks[sorts]
    x = x.cumsum(0)
    keep = torch.ones(x.shape[0], device=x.device, dtype=torch.bool)
    keep[:-1] = ranks[1:] != ranks[:-1]
    x, geom, batch_ix = x[keep], geom[keep], batch_ix[keep]
    x = torch.cat((x[:1], x[1:] - x[:-1]))
    final = torch.zeros(b, c, grid.depth, grid.height, grid.width, device=x.device)
    final[batch_ix, :, geom[:, 2], geom[:, 1], geom[:, 0]] = x
    return final.sum(2)  # collapse z, as LSS does with torch.cat(final.unbind(dim=2), 1) for nz=1


def bench_bev_pool(device: str, repeats: int) -> dict:
    from perception.ops.bev_pool import BEVPoolGeometry, bev_pool

    grid = BEVGrid(x_range=(-54, 54), y_range=(-54, 54), z_range=(-10, 10), cell_size=0.3,
                   voxel_z=20.0)
    pts = camera_frustum().to(device)
    g = torch.Generator().manual_seed(1)
    depth = torch.softmax(torch.randn(1, 6, 118, 32, 88, generator=g), dim=2).to(device)
    feats = torch.randn(1, 6, 32, 88, 80, generator=g).to(device)
    res = {"frustum": [1, 6, 118, 32, 88], "channels": 80, "bev": list(grid.shape)}
    t0 = time.perf_counter()
    geom = BEVPoolGeometry.build(pts, grid)
    sync_device(device)
    res["geometry_build_ms"] = (time.perf_counter() - t0) * 1e3
    res["points_in_range"] = geom.num_points
    ours = lambda: bev_pool(depth, feats, geom)  # noqa: E731
    base = lambda: lss_cumsum_pool(depth, feats, pts, grid)  # noqa: E731
    with torch.no_grad():
        diff = (ours() - base()).abs().max().item()
        res["max_abs_diff"] = diff
        res["ours_ms"] = time_ms(ours, device, repeats)
        res["baseline_ms"] = time_ms(base, device, max(1, min(repeats, 3)))
        res["ours_peak_mb"] = peak_mb(ours, device)
        res["baseline_peak_mb"] = peak_mb(base, device)
    # Training cost: forward + backward for depth and feats.
    dr = depth.clone().requires_grad_()
    fr = feats.clone().requires_grad_()

    def fwd_bwd():
        bev_pool(dr, fr, geom).sum().backward()

    res["ours_fwd_bwd_ms"] = time_ms(fwd_bwd, device, max(1, repeats // 2))
    res["baseline"] = "LSS cumsum pooling (geometry recomputed per call, as published)"
    res["speedup"] = res["baseline_ms"] / res["ours_ms"]
    if res["ours_peak_mb"] and res["baseline_peak_mb"]:
        res["memory_ratio"] = res["baseline_peak_mb"] / max(res["ours_peak_mb"], 1e-3)
    return res


# ----------------------------------------------------------------------------- nms
def detections(n: int = 1000, seed: int = 0):
    """(boxes (n, 9), scores (n,), labels (n,)) like a detector's pre-NMS output: clusters of
    overlapping boxes around ~n/4 objects over +-54 m, 10 classes."""
    g = torch.Generator().manual_seed(seed)
    n_obj = n // 4
    centres = torch.rand(n_obj, 2, generator=g) * 108 - 54
    size = torch.rand(n_obj, 2, generator=g) * torch.tensor([4.0, 1.5]) + torch.tensor([0.5, 0.5])
    yaw = torch.rand(n_obj, generator=g) * 2 * math.pi - math.pi
    cls = torch.randint(0, 10, (n_obj,), generator=g)
    pick = torch.randint(0, n_obj, (n,), generator=g)
    boxes = torch.zeros(n, 9)
    boxes[:, :2] = centres[pick] + 0.4 * torch.randn(n, 2, generator=g)
    boxes[:, 3:5] = size[pick] * (1 + 0.1 * torch.randn(n, 2, generator=g))
    boxes[:, 5] = 1.6
    boxes[:, 6] = yaw[pick] + 0.1 * torch.randn(n, generator=g)
    return boxes, torch.rand(n, generator=g), cls[pick]


def bench_nms(device: str, repeats: int) -> dict:
    from perception.ops.nms import circle_nms, nms_bev, nms_bev_reference

    boxes, scores, labels = detections()
    boxes, scores, labels = boxes.to(device), scores.to(device), labels.to(device)
    thr = 0.2
    ours = lambda: nms_bev(boxes, scores, labels, thr)  # noqa: E731
    base = lambda: nms_bev_reference(boxes, scores, labels, thr)  # noqa: E731
    k_ours, k_base = ours(), base()
    res = {"boxes": boxes.shape[0], "iou_threshold": thr, "kept": int(k_ours.numel()),
           "same_kept_set": bool(torch.equal(k_ours.cpu(), k_base.cpu()))}
    res["ours_ms"] = time_ms(ours, device, repeats)
    res["baseline_ms"] = time_ms(base, device, max(1, min(repeats, 3)), warmup=0)
    res["baseline"] = "plain reference (dense pairwise rotated IoU + greedy)"
    res["speedup"] = res["baseline_ms"] / res["ours_ms"]
    res["circle_ours_ms"] = time_ms(lambda: circle_nms(boxes, scores, labels, 1.0), device,
                                    repeats)
    return res


def bench_eval(device: str, repeats: int) -> dict:
    """nuScenes detection metrics: ours vs the devkit's DetectionEval at val scale (CPU work
    whatever the device: both are numpy)."""
    from perception.evaluation.bench import run_eval_bench

    return run_eval_bench(repeat=max(1, min(repeats, 3)))


# ----------------------------------------------------------------------------- end to end
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
END_TO_END_CONFIGS = {"synthetic": "synthetic/fusion.yaml", "nuscenes": "nuscenes/fusion.yaml"}


def _end_to_end_configs() -> dict:
    from perception.config import load_config
    from perception.models.config import ExperimentConfig

    cfgs = {}
    for name, rel in END_TO_END_CONFIGS.items():
        path = os.path.join(CONFIGS_DIR, rel)
        if not os.path.exists(path):
            raise FileNotFoundError(f"end_to_end needs {path} (run from a source checkout)")
        cfgs[name] = (rel, load_config(path, ExperimentConfig))
    return cfgs


def save_end_to_end_frames(out_dir: str) -> list[str]:
    """Write the end-to-end inputs, one loaded Batch per config (``out_dir/NAME.pt``), for
    ``bench --frames`` on a machine that can run the model but not the reader (no devkit: the
    GPU machine). Returns the files written."""
    import tempfile

    from perception.engine.latency import frame_batch, latency_world

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    with tempfile.TemporaryDirectory(prefix="perception-latency-") as tmp:
        root = latency_world(tmp)
        for name, (_rel, cfg) in _end_to_end_configs().items():
            path = os.path.join(out_dir, f"{name}.pt")
            torch.save(frame_batch(cfg, root), path)
            paths.append(path)
    return paths


def bench_end_to_end(device: str, repeats: int, frames_dir: str | None = None) -> dict:
    """The whole detector at batch 1, per stage (``perception.engine.latency``), for the CPU-scale
    synthetic config and the nuScenes-scale one, on a frame of a small synthetic world written
    to a temporary folder, or on the frames ``save_end_to_end_frames`` wrote to ``frames_dir``."""
    import contextlib
    import tempfile

    from perception.engine.latency import latency_world, stage_latency

    out = {}
    with contextlib.ExitStack() as stack:
        root = None
        if frames_dir is None:
            root = latency_world(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="perception-latency-")))
        for name, (rel, cfg) in _end_to_end_configs().items():
            batch = None
            if frames_dir is not None:
                path = os.path.join(frames_dir, f"{name}.pt")
                if not os.path.exists(path):
                    raise FileNotFoundError(f"{path}: write the frames with `perception bench "
                                            f"--save-frames {frames_dir}` where the devkit is "
                                            "installed")
                batch = torch.load(path, weights_only=False)
            # A CUDA frame takes tens of ms: more repeats cost little and steady the median
            # (on the H200 two runs of 5 gave 36.7 and 41.6 ms for the same code).
            cap = 30 if device == "cuda" else 5
            out[name] = stage_latency(cfg, root, device, repeats=max(1, min(repeats, cap)),
                                      batch=batch)
            out[name]["config"] = f"configs/{rel}"
            print(f"bench end_to_end {name}: {out[name]['total_ms']:.1f} ms/frame "
                  f"(first call {out[name]['first_call_ms']:.0f} ms)", flush=True)
    return out


BENCHES: dict[str, Callable[[str, int], dict]] = {
    "voxelize": bench_voxelize,
    "bev_pool": bench_bev_pool,
    "nms": bench_nms,
    "eval": bench_eval,
    "end_to_end": bench_end_to_end,
}


def machine_info(device: str) -> dict:
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": device, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_bench(device: str = "cpu", only: list[str] | str | None = None,
              json_out: str | None = None, repeats: int = 10,
              frames_dir: str | None = None) -> dict:
    """Run the selected benchmarks; print a table; optionally write JSON.

    Each entry's result is printed, and the JSON rewritten, as soon as that entry finishes, so a
    run stopped part-way (a time limit on a lent GPU) keeps what it measured. An entry that
    raises is recorded as ``{"error": "Type: message"}`` and the others still run.

    Args:
        device: "cpu" or "cuda".
        only: names from ``BENCHES`` (a list, or a comma-separated string); None runs all.
        json_out: path of the JSON file to write, or None.
        repeats: timed repeats per measurement (baselines that take seconds use at most 3).
        frames_dir: end_to_end inputs saved by ``save_end_to_end_frames`` (None: make them).
    Returns:
        {"machine": {...}, name: {"ours_ms", "baseline_ms", ...} or {"error": ...}, ...}
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked, but torch sees no CUDA GPU")
    names = list(BENCHES) if not only else (
        [s.strip() for s in only.split(",")] if isinstance(only, str) else list(only))
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}")
    results: dict = {"machine": machine_info(device)}
    benches = dict(BENCHES, end_to_end=functools.partial(bench_end_to_end, frames_dir=frames_dir))
    for name in names:
        t0 = time.perf_counter()
        try:
            results[name] = benches[name](device, repeats)
        except Exception as e:  # noqa: BLE001 - reported in the results, the next entry runs
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        status = results[name].get("error", "done")
        print(f"bench {name}: {status} ({time.perf_counter() - t0:.1f} s)", flush=True)
        if json_out:
            with open(json_out, "w") as f:
                json.dump(results, f, indent=2)
    print(format_table(results))
    return results


def failed(results: dict) -> list[str]:
    """Names of the entries of ``run_bench``'s results that raised."""
    return [k for k, v in results.items() if isinstance(v, dict) and "error" in v]


def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def format_table(results: dict) -> str:
    rows = [f"{'op':<10} {'ours ms':>10} {'base ms':>10} {'speedup':>8} {'ours MB':>9} "
            f"{'base MB':>9}"]
    for name, r in results.items():
        if name == "machine" or not isinstance(r, dict):
            continue
        if "error" in r:
            rows.append(f"{name:<10} FAILED: {r['error']}")
            continue
        if name == "end_to_end":
            continue
        # The eval entry's baseline is the devkit itself.
        o, b = r.get("ours_ms"), r.get("baseline_ms", r.get("devkit_ms"))
        ratio = (b / o) if (o and b) else None
        rows.append(f"{name:<10} {_fmt(o, '.2f'):>10} {_fmt(b, '.2f'):>10} "
                    f"{_fmt(ratio, '.2f'):>8} {_fmt(r.get('ours_peak_mb')):>9} "
                    f"{_fmt(r.get('baseline_peak_mb')):>9}")
    e2e = results.get("end_to_end", {})
    for cfg_name, r in ({} if "error" in e2e else e2e).items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages_ms"].items())
        rows.append(f"end_to_end {cfg_name}: {r['total_ms']:.1f} ms/frame ({r['fps']:.2f} fps), "
                    f"peak {_fmt(r['peak_mb'])} MB; ms per stage: {stages}")
    m = results.get("machine", {})
    rows.append(f"({m.get('device')}: {m.get('gpu', m.get('cpu'))}, {m.get('torch_threads')} "
                f"threads, torch {m.get('torch')})")
    return "\n".join(rows)


def add_bench_arguments(parser) -> None:
    """Adds ``--device``, ``--only``, ``--json``, ``--repeats`` to an argparse parser."""
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of {', '.join(BENCHES)}")
    parser.add_argument("--json", dest="json_out", default=None, help="write results here")
    parser.add_argument("--repeats", type=int, default=10)


def main(args) -> int:
    """Entry for the CLI: ``run_bench`` from parsed ``add_bench_arguments`` args; exit status 1
    when an entry failed."""
    results = run_bench(device=args.device, only=args.only, json_out=args.json_out,
                        repeats=args.repeats)
    return 1 if failed(results) else 0


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(p)
    raise SystemExit(main(p.parse_args()))
