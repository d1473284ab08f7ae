"""Per-stage latency of the detector at batch 1: ``stage_latency(cfg, dataroot, device)``.

Stages (the order a frame goes through them):

- ``camera``: the image CNN and FPN over the six cameras;
- ``view_transform``: depth lift, ``bev_pool`` into the BEV grid and the camera BEV convs;
- ``lidar``: voxelization, the sparse 3D backbone and the height collapse;
- ``radar``: the radar point encoder and its scatter to BEV;
- ``fusion``: the attention fuser with its context blocks;
- ``head``: the CenterPoint head's convolutions;
- ``decode``: peak picking, top-k, circle NMS into Detections.

Stage times come from forward hooks on the modules (with a device synchronise at each boundary),
medians over repeats; ``total_ms`` is timed separately without hooks (so the synchronisations do
not count), and ``fps = 1000 / total_ms``. The input is a real frame of the synthetic world
(``latency_world``: its LiDAR has ~34k points a sweep like nuScenes', five radars, six cameras),
loaded with the config's sweep counts and image size. Weights are a fresh initialisation unless
a checkpoint is given: latency does not depend on them, except ``decode``, which with untrained
weights sees the most candidates (every cell near the initial score) -- an upper bound.
"""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

import torch
from torch import nn

STAGES = ("camera", "view_transform", "lidar", "radar", "fusion", "head", "decode")


def latency_world(out_dir) -> str:
    """Write the small synthetic world the latency input comes from (one 1.6 s scene, all sweeps;
    a few seconds) and return its root."""
    from perception.data.synthetic.generate import SynthConfig, generate

    generate(out_dir, SynthConfig(scenes=1, duration_s=1.6, workers=1, seed=7), verbose=False)
    return str(out_dir)


def frame_batch(cfg, dataroot: str, version: str = "v1.0-mini"):
    """The last mini_val keyframe of ``dataroot`` (its most previous sweeps) loaded the way
    ``perception eval`` loads it for ``cfg`` (``build_eval_loader``: the config's sweep counts,
    images resized to the network input). Returns a Batch of 1."""
    from perception.engine.inference import build_eval_loader
    from perception.structures.batch import collate

    ds = build_eval_loader(cfg, dataroot, version, "mini_val", cfg.model.modalities).dataset
    return collate([ds[len(ds) - 1]])


def _stage_modules(model) -> dict[str, list[nn.Module]]:
    enc = model.encoders
    out: dict[str, list[nn.Module]] = {}
    if "camera" in enc:
        out["camera"] = [enc["camera"].backbone, enc["camera"].neck]
        out["view_transform"] = [enc["camera"].lift, enc["camera"].bev_conv]
    if "lidar" in enc:
        out["lidar"] = [enc["lidar"]]
    if "radar" in enc:
        out["radar"] = [enc["radar"]]
    out["fusion"] = [model.fuser]
    out["head"] = [model.head]
    return out


@contextmanager
def _stage_hooks(model, sync, acc: dict[str, float]):
    """Add the wall time of every stage module's forward to ``acc`` (ms)."""
    handles, starts = [], {}
    for stage, modules in _stage_modules(model).items():
        for mod in modules:
            def pre(_m, _inp, key=id(mod)):
                sync()
                starts[key] = time.perf_counter()

            def post(_m, _inp, _out, key=id(mod), stage=stage):
                sync()
                acc[stage] = acc.get(stage, 0.0) + (time.perf_counter() - starts.pop(key)) * 1e3

            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def stage_latency(cfg, dataroot: str | None, device: str = "cpu", *, repeats: int = 5,
                  checkpoint=None, half: bool | None = None, batch=None) -> dict:
    """Batch-1 latency of the model of ``cfg`` per stage.

    Args:
        cfg: ``ExperimentConfig`` (its model and data sections set the scale).
        dataroot: a v1.0-mini dataset (``latency_world`` writes one); its last mini_val keyframe
            is the input. Unused when ``batch`` is given.
        batch: the input, already loaded (``frame_batch``), e.g. on a machine without the devkit.
        device: "cpu" or "cuda".
        repeats: timed runs (after one warm-up) per measurement; medians are reported.
        checkpoint: optional weights (path or state dict file).
        half: fp16 autocast (default: on CUDA; never on CPU).
    Returns:
        {"fps", "total_ms", "total_ms_quartiles" (of the timed runs), "first_call_ms" (the
         warm-up run), "stages_ms": {stage: ms},
         "peak_mb", "lidar_points", "radar_points", "image_size", "grid", "parameters", "half"}
    """
    from perception.bench import peak_mb
    from perception.models import build_model

    half = (device == "cuda") if half is None else bool(half and device == "cuda")
    model = build_model(cfg.model)
    if checkpoint is not None:
        from perception.engine.checkpoint import model_state

        model.load_state_dict(model_state(checkpoint))
    model.to(device).eval()
    batch = (frame_batch(cfg, dataroot) if batch is None else batch).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def amp():
        return torch.autocast(device_type="cuda", dtype=torch.float16, enabled=half)

    def run():
        with torch.no_grad(), amp():
            heads = model(batch).heads
            dets = model.head.decode(heads)
        sync()
        return dets

    def timed_stages(acc):
        with torch.no_grad(), amp():
            with _stage_hooks(model, sync, acc):
                heads = model(batch).heads
            sync()
            t0 = time.perf_counter()
            model.head.decode(heads)
            sync()
            acc["decode"] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    run()                                           # warm-up: caches, allocator, lazy imports,
    first_call = (time.perf_counter() - t0) * 1e3   # on CUDA Triton's compiling and autotuning
    per_stage: dict[str, list[float]] = {}
    totals = []
    for _ in range(repeats):
        acc: dict[str, float] = {}
        timed_stages(acc)
        for k, v in acc.items():
            per_stage.setdefault(k, []).append(v)
        t0 = time.perf_counter()
        run()
        totals.append((time.perf_counter() - t0) * 1e3)
    total = statistics.median(totals)
    return {
        "fps": 1000.0 / total,
        "total_ms": total,
        "total_ms_quartiles": [float(q) for q in statistics.quantiles(totals, n=4)]
        if len(totals) > 1 else [total] * 3,
        "first_call_ms": first_call,
        "stages_ms": {s: statistics.median(per_stage[s]) for s in STAGES if s in per_stage},
        "peak_mb": peak_mb(run, device),
        "lidar_points": int(len(batch.lidar_points[0])),
        "radar_points": int(len(batch.radar_points[0])),
        "image_size": list(cfg.model.camera.image_size) if "camera" in cfg.model.modalities else None,
        "grid": list(cfg.model.grid.shape),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "half": half,
    }
