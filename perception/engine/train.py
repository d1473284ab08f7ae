"""The training loop: ``train(cfg, work_dir)``; ``perception train`` calls it.

One iteration: a Batch from the augmented training stream -> forward + loss (float16 autocast
on CUDA when ``train.amp``, bfloat16 on CPU when ``train.cpu_bf16``) -> backward (gradient
scaling) -> global-norm clipping -> AdamW step -> learning-rate schedule step. Every
``checkpoint_interval`` iterations and at the end, ``iter_N.pt`` and ``latest.pt`` are written
atomically into the work dir.

Exact resume: a checkpoint holds the model, optimizer, schedule, gradient scaler, the
Python/numpy/torch RNG states and the iteration. The data stream is a pure function of
``(seed, position)`` (``perception.data.sampler``), so restarting it at ``iteration *
batch_size`` gives the same frames with the same augmentation; the DataLoader has its own
generator so that creating it does not draw from the global RNG that modality dropout uses.
N iterations straight and N/2 + resume + N/2 give bitwise-identical parameters on CPU (a test
checks this); on CUDA, bitwise equality also needs deterministic kernels
(``train.deterministic``), which spconv and scatter-adds only approximate.

A run may start from another run's weights (``train.init_from``: a fine-tune, or a second
phase with other losses; ``train.init_partial``: from a model of other sensors, e.g. the LiDAR
path of a fusion model from the LiDAR model); the optimizer, schedule and data order then start
afresh.

Work dir layout: ``config.yaml`` (the resolved config), ``log.csv``, ``iter_N.pt``,
``latest.pt``, and the GT-paste database when pasting is on.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from perception.config import config_to_dict, save_config
from perception.engine.checkpoint import (
    FORMAT,
    LATEST,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from perception.engine.logging import CSVLog, Progress
from perception.models.config import INFERENCE_ONLY

# Config keys a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = ("data.root", "data.num_workers", "train.checkpoint_interval",
                     "train.keep_checkpoints", "train.log_interval",
                     *(f"model.{k}" for k in INFERENCE_ONLY))


@dataclass
class TrainResult:
    """What a run did.

    Attributes:
        iteration: the iteration reached (== ``train.max_iters`` unless stopped early).
        checkpoint: the last checkpoint written.
        losses: the last iteration's loss terms (floats).
        seconds_per_iteration: mean wall time of the iterations this process ran (data
            included), excluding the first (warm-up: caches, allocator).
    """

    iteration: int
    checkpoint: Path
    losses: dict[str, float]
    seconds_per_iteration: float


# ---------------------------------------------------------------------------------------------
# Schedule, optimizer
# ---------------------------------------------------------------------------------------------
class LRSchedule:
    """Per-iteration learning rate: warm-up from ``lr / start_div`` to ``lr``, then cosine
    decay to ``lr / final_div`` at ``max_iters``.

    ``kind="onecycle"`` warms up along a half cosine (smooth start and top, as one-cycle),
    ``"cosine"`` linearly. Its state is the iteration alone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, kind: str, lr: float, max_iters: int,
                 warmup: float, final_div: float, start_div: float = 25.0):
        if kind not in ("onecycle", "cosine"):
            raise ValueError(f"unknown schedule {kind!r}")
        self.optimizer, self.kind, self.lr = optimizer, kind, lr
        self.max_iters = max_iters
        self.warmup_iters = int(round(warmup * max_iters))
        self.final_div, self.start_div = final_div, start_div
        self.iteration = 0
        self._apply()

    def lr_at(self, it: int) -> float:
        lo, top, end = self.lr / self.start_div, self.lr, self.lr / self.final_div
        if it < self.warmup_iters:
            t = it / self.warmup_iters
            if self.kind == "onecycle":
                return lo + (top - lo) * 0.5 * (1 - math.cos(math.pi * t))
            return lo + (top - lo) * t
        span = max(1, self.max_iters - self.warmup_iters)
        t = min(1.0, (it - self.warmup_iters) / span)
        return end + (top - end) * 0.5 * (1 + math.cos(math.pi * t))

    def _apply(self) -> None:
        lr = self.lr_at(self.iteration)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        self.iteration += 1
        self._apply()

    @property
    def current(self) -> float:
        return self.lr_at(self.iteration)

    def state_dict(self) -> dict:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self._apply()


def build_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW; weight decay only on weight matrices and kernels (ndim > 1): decaying norm scales
    and biases pulls them towards 0 for no regularising benefit (BN/GN already fix the scale)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and torch; optionally ask for deterministic kernels."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: spconv and a few scatter kernels have no deterministic CUDA variant; a
        # warning says so instead of refusing to train.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def dataset_modalities(model_modalities: Sequence[str], *,
                       depth_supervision: bool = False) -> tuple[str, ...]:
    """Sensors to load for a model: the ones it was built with, and LiDAR as the depth target
    of a camera model trained with depth supervision."""
    need = set(model_modalities)
    if depth_supervision and "camera" in need:
        need.add("lidar")
    return tuple(m for m in ("lidar", "radar", "camera") if m in need)


def build_train_dataset(cfg, work_dir: str | os.PathLike, *, nusc=None, verbose: bool = True):
    """The augmented training dataset and, for CBGS, the classes of every frame.

    Args:
        cfg: ``ExperimentConfig``.
        work_dir: where a relative GT-paste database path lives.
        nusc: an already loaded ``NuScenes`` of ``cfg.data``'s tables (optional).
    Returns:
        (``AugmentedDataset``, per-frame class arrays or None).
    """
    from perception.data.augment import AugmentedDataset, FrameAugmenter, GTDatabase, GTPaste
    from perception.data.nuscenes import NuScenesDataset
    from perception.data.sampler import frame_classes

    d = cfg.data
    if nusc is None:
        from nuscenes.nuscenes import NuScenes

        nusc = NuScenes(version=d.version, dataroot=d.root, verbose=False)
    m = cfg.model
    base = NuScenesDataset(d.root, d.version, d.train_split, sweeps=d.lidar_sweeps,
                           radar_sweeps=d.radar_sweeps, nusc=nusc,
                           modalities=dataset_modalities(
                               m.modalities, depth_supervision=m.camera.depth_weight > 0))
    image_size = cfg.model.camera.image_size if "camera" in cfg.model.modalities else None
    aug = d.augment
    augmenter = None
    if aug.enabled:
        paste = None
        # Pasted objects exist only in the point clouds: a model without a point sensor would be
        # taught boxes it cannot see (its LiDAR, loaded for depth targets, is not an input).
        if aug.paste.counts and {"lidar", "radar"} & set(m.modalities):
            db_path = Path(aug.paste.database)
            if not db_path.is_absolute():
                db_path = Path(work_dir) / db_path
            if db_path.exists():
                db = GTDatabase.load(db_path)
            else:
                src = NuScenesDataset(d.root, d.version, d.train_split, sweeps=d.lidar_sweeps,
                                      radar_sweeps=d.radar_sweeps, modalities=("lidar", "radar"),
                                      nusc=nusc)
                if verbose:
                    print(f"train: building the GT-paste database from {len(src)} frames -> {db_path}")
                db = GTDatabase.build((src[i] for i in range(len(src))),
                                      min_lidar_points=aug.paste.min_lidar_points,
                                      radar_margin=aug.paste.radar_margin)
                db.save(db_path)
            paste = GTPaste(db, aug.paste.counts, cfg.model.classes, aug.paste.radar_margin)
        paste_until = None
        if paste is not None and aug.paste.fade > 0:
            t = cfg.train
            paste_until = round((1.0 - aug.paste.fade) * t.max_iters) * t.batch_size
        augmenter = FrameAugmenter(aug, image_size, paste, paste_until)
    classes = frame_classes(base) if d.cbgs else None
    return AugmentedDataset(base, augmenter, image_size), classes


def make_loader(dataset, sampler, batch_size: int, num_workers: int, seed: int):
    """A DataLoader over an endless sampler, collating Frames into Batches."""
    from perception.structures.batch import collate

    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        collate_fn=collate, drop_last=True,
        # Its own generator: creating the iterator must not draw from the global RNG.
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False, prefetch_factor=2 if num_workers > 0 else None)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def _config_diff(a, b, defaults=None, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between config dicts ``a`` (a checkpoint's) and ``b``. A
    key ``a`` lacks (a checkpoint written before the option existed) counts as its value in
    ``defaults``."""
    if isinstance(a, dict) and isinstance(b, dict):
        d = defaults if isinstance(defaults, dict) else {}
        out = []
        for k in sorted(set(a) | set(b)):
            out += _config_diff(a.get(k, d.get(k)), b.get(k), d.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix[:-1]]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: on x86, AVX512-BF16 or AMX; elsewhere what
    oneDNN reports. (oneDNN's own check also says yes on x86 CPUs with AVX-512 but neither,
    where it emulates bfloat16: the synthetic fusion model trained at 12.5 s an iteration
    there against 6.9 s in float32, docs/training.md.)"""
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i386", "i686"):
        return onednn
    checks = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return onednn and any(check is not None and bool(check()) for check in checks)


def cpu_autocast(enabled: bool):
    """The context of ``train.cpu_bf16``: bfloat16 autocast on CPU, or nothing.

    Without native bfloat16 (emulated, several times slower than float32) it warns and gives
    nothing: a config written on one machine still trains in float32 on another."""
    if not enabled:
        return contextlib.nullcontext()
    if not cpu_has_native_bf16():
        warnings.warn("train.cpu_bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); "
                      "training in float32")
        return contextlib.nullcontext()
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16)


def _resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# Tensors indexed by modality along their first dimension (the order of ``model.modalities``):
# a partial start maps their rows by sensor name.
MODALITY_ROWS = ("fuser.embed", "fuser.channel_logits", "fuser.modality_bias")


def init_weights(model: torch.nn.Module, path: str | os.PathLike, *,
                 partial: bool = False, favour: float = 0.0) -> dict[str, int]:
    """Load ``train.init_from``'s weights into ``model``: every tensor, of the same shapes,
    or a ``ValueError`` naming the file and the tensors that differ. A model with
    ``fusion.subset_heads`` from a file without them: each subset head starts from the file's
    head; with ``fusion.subset_norm_stats``, the statistics start as the file's.

    ``partial`` (``train.init_partial``): a file of another sensor set (a LiDAR model into a
    fusion model): each tensor the file has under the model's name and shape is loaded; rows
    of the per-modality tensors (``MODALITY_ROWS``) by sensor name; the rest (an encoder the
    file lacks) keeps its fresh initialisation, and tensors of the file the model lacks are
    ignored. A tensor there under both names with another shape is still an error.
    ``favour`` (``train.init_favour``, partial only): the rows of the file's sensors in the
    fuser's per-sensor logits (``FAVOURED_ROWS``) start that much higher than the fresh
    sensors' (the stored values are scaled by the fuser's gain), so that the model starts as
    the file's model on frames with the file's sensors.
    Returns ``{"loaded": n, "fresh": n}`` (tensors)."""
    from perception.engine.checkpoint import model_state

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"train.init_from: no file {path}")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    state = model_state(raw)
    for name in model.state_dict():
        if name.startswith("subset_heads.") and name not in state:
            source = "head." + name.split(".", 2)[2]
            if source in state:
                state[name] = state[source]
    state = model.with_missing_stats(state)
    if partial:
        state = _partial_state(model, state, path, raw.get("config"))
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        own.update(state)
        if favour:
            _favour_rows(model, own, path, raw.get("config"), favour)
        model.load_state_dict(own)
        return {"loaded": len(state), "fresh": len(missing)}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:     # torch lists the missing, unexpected and resized tensors
        raise ValueError(f"train.init_from: {path} holds another architecture than the config "
                         f"builds: {err}") from None
    return {"loaded": len(state), "fresh": 0}


def _file_modalities(path: Path, config: dict | None, why: str) -> list[str]:
    """The sensors of the file ``path``, in the order ``build_model`` gives them (whatever the
    order its ``config`` lists them in); a bare state dict does not say, so ``why`` they are
    needed makes it an error."""
    from perception.models.config import MODALITIES

    if config is None:
        raise ValueError(f"train.init_from: {path} is a bare state dict; {why} needs a "
                         f"checkpoint or exported model file, whose config names its sensors")
    listed = config["model"]["modalities"]
    return [m for m in MODALITIES if m in listed]


def _partial_state(model: torch.nn.Module, state: dict, path: Path,
                   config: dict | None) -> dict:
    """The tensors of ``state`` that fit ``model`` (``init_weights(partial=True)``); ``config``
    is the file's training config, which says whose rows its per-modality tensors hold."""
    own = model.state_dict()
    mine = list(model.modalities)
    out, resized = {}, []
    for name, value in state.items():
        if name not in own:
            continue
        if name in MODALITY_ROWS:
            theirs = _file_modalities(path, config, f"a partial start (the rows of {name})")
            rows = own[name].clone()
            if value.shape[1:] != rows.shape[1:] or len(value) != len(theirs):
                resized.append(name)
                continue
            for i, m in enumerate(mine):
                if m in theirs:
                    rows[i] = value[theirs.index(m)]
            out[name] = rows
        elif value.shape == own[name].shape:
            out[name] = value
        else:
            resized.append(name)
    if resized:
        raise ValueError(f"train.init_from: {path} has tensors of other shapes than the config "
                         f"builds (another architecture, not only other sensors): "
                         f"{resized[:8]}")
    if not out:
        raise ValueError(f"train.init_from: {path} has no tensor the model shares")
    return out


def init_encoder(model: torch.nn.Module, sensor: str, path: str | os.PathLike) -> int:
    """``train.init_encoders``: load ``sensor``'s encoder (``encoders.<sensor>.*``) of the
    file ``path`` into ``model``; a ``ValueError`` naming the file when the model or the file
    lacks that encoder or its tensors differ in shape. Returns the tensors loaded."""
    from perception.engine.checkpoint import model_state

    path = Path(path)
    if sensor not in getattr(model, "encoders", {}):
        raise ValueError(f"train.init_encoders: the model has no {sensor} encoder "
                         f"(sensors {list(model.encoders)})")
    if not path.is_file():
        raise FileNotFoundError(f"train.init_encoders: no file {path}")
    prefix = f"encoders.{sensor}."
    theirs = {k: v for k, v in model_state(torch.load(path, map_location="cpu",
                                                       weights_only=True)).items()
              if k.startswith(prefix)}
    own = model.state_dict()
    mine = {k for k in own if k.startswith(prefix)}
    if not theirs:
        raise ValueError(f"train.init_encoders: {path} holds no {sensor} encoder")
    differ = sorted(k for k in mine if k not in theirs or theirs[k].shape != own[k].shape)
    differ += sorted(set(theirs) - mine)
    if differ:
        raise ValueError(f"train.init_encoders: {path}'s {sensor} encoder is another "
                         f"architecture than the config builds: {differ[:8]}")
    own.update({k: v.to(own[k].dtype) for k, v in theirs.items()})
    model.load_state_dict(own)
    return len(theirs)


FAVOURED_ROWS = ("fuser.channel_logits", "fuser.modality_bias")


def _favour_rows(model: torch.nn.Module, own: dict, path: Path, config: dict | None,
                 favour: float) -> None:
    """``init_weights(favour=...)``: raise the rows of the file's sensors in ``own``'s
    ``FAVOURED_ROWS`` by ``favour`` (in logits, i.e. after the fuser's gain)."""
    theirs = _file_modalities(path, config, "train.init_favour")
    mine = list(model.modalities)
    rows = [i for i, m in enumerate(mine) if m in theirs]
    names = [n for n in FAVOURED_ROWS if n in own]
    if not names or not rows or len(rows) == len(mine):
        raise ValueError(f"train.init_favour: nothing to favour: the model's sensors {mine} "
                         f"and {path}'s {theirs}; it needs a fusion model and a file with "
                         "some of its sensors, not all")
    gain = model.fuser.CHANNEL_LOGIT_GAIN
    for name in names:
        own[name] = own[name].clone()
        own[name][rows] += favour / gain


def train(cfg, work_dir: str | os.PathLike, *, resume: bool = False, stop_after: int | None = None,
          device=None, progress: bool = True, nusc=None) -> TrainResult:
    """Train ``build_model(cfg.model)`` for ``cfg.train.max_iters`` iterations.

    Args:
        cfg: ``ExperimentConfig`` (resolved; it is saved as ``work_dir/config.yaml``).
        work_dir: output folder (created).
        resume: continue from ``work_dir/latest.pt`` (the config may differ only in
            ``RESUMABLE_CHANGES``).
        stop_after: stop once this iteration is reached (after writing a checkpoint), as a
            preempted job would; ``resume`` continues. None = run to ``max_iters``.
        device: "cpu", "cuda", a torch.device, or None/"auto".
        progress: show the progress line.
        nusc: an already loaded ``NuScenes`` for ``cfg.data`` (saves loading the tables again).
    Returns:
        :class:`TrainResult`.
    """
    from perception.data.sampler import TrainSampler
    from perception.models import build_model

    t = cfg.train
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = _resolve_device(device)
    seed_everything(t.seed, t.deterministic)

    model = build_model(cfg.model).to(device)
    optimizer = build_optimizer(model, t)
    schedule = LRSchedule(optimizer, kind=t.schedule, lr=t.lr, max_iters=t.max_iters,
                          warmup=t.warmup, final_div=t.final_div)
    use_amp = t.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    cfg_dict = config_to_dict(cfg)

    start = 0
    restored_rng = None
    if resume:
        path = work_dir / LATEST
        if not path.exists():
            raise FileNotFoundError(f"--resume: no {path}; start without --resume")
        ck = load_checkpoint(path, map_location="cpu")
        defaults = config_to_dict(type(cfg)())
        diff = [k for k in _config_diff(ck["config"], cfg_dict, defaults)
                if k not in RESUMABLE_CHANGES]
        if diff:
            raise ValueError(f"--resume: the config differs from the checkpoint's in {diff}; "
                             f"only {list(RESUMABLE_CHANGES)} may change")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        schedule.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        start = int(ck["iteration"])
        restored_rng = ck["rng"]
    elif t.init_from:
        counts = init_weights(model, t.init_from, partial=t.init_partial,
                              favour=t.init_favour)
        if t.init_partial and progress:
            print(f"train.init_from {t.init_from}: {counts['loaded']} tensors loaded, "
                  f"{counts['fresh']} start fresh")
    if not resume:
        for sensor, path in t.init_encoders.items():
            n = init_encoder(model, sensor, path)
            if progress:
                print(f"train.init_encoders: {sensor} encoder from {path} ({n} tensors)")
    save_config(cfg, work_dir / "config.yaml")

    end = t.max_iters if stop_after is None else min(t.max_iters, int(stop_after))
    last_ck = work_dir / LATEST
    if start >= end:
        return TrainResult(start, last_ck, {}, 0.0)

    dataset, classes = build_train_dataset(cfg, work_dir, nusc=nusc, verbose=progress)
    sampler = TrainSampler(len(dataset), t.seed, start=start * t.batch_size,
                           classes_per_frame=classes)
    loader = make_loader(dataset, sampler, t.batch_size, cfg.data.num_workers, t.seed)
    log = CSVLog(work_dir / "log.csv", resume_from=start if resume else None)
    bar = Progress(end, start=start, every=t.log_interval, enabled=progress)
    if restored_rng is not None:
        # Last, after everything that may draw numbers while being built.
        set_rng_state(restored_rng)

    autocast = (torch.autocast(device_type="cuda", dtype=torch.float16) if use_amp
                else cpu_autocast(t.cpu_bf16 and device.type == "cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    it = start
    losses_f: dict[str, float] = {}
    t_prev = time.perf_counter()
    timed, busy = 0, 0.0
    data_iter = iter(loader)
    while it < end:
        t_data = time.perf_counter()
        batch = next(data_iter).to(device, non_blocking=True)
        t_data = time.perf_counter() - t_data
        # Modality dropout by phase (every sensor, the usual rates, the late rates): a pure
        # function of the iteration, so --resume continues it exactly.
        model.modality_dropout = cfg.model.fusion.dropout_at(it, t.max_iters)
        with autocast:
            out = model(batch)
            losses = model.loss(out, batch)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {float(loss.detach())} at iteration {it + 1} "
                f"(samples {batch.tokens}): "
                + ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in losses.items()))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        # max_norm=inf measures the norm without clipping.
        grad_norm = nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else math.inf)
        lr = schedule.current
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        it += 1

        now = time.perf_counter()
        step_time, t_prev = now - t_prev, now
        if it > start + 1:  # the first iteration warms caches up; it is not representative
            timed += 1
            busy += step_time
        losses_f = {k: float(v.detach()) for k, v in losses.items()}
        total = float(loss.detach())
        if it % t.log_interval == 0 or it == end:
            log.write({"iteration": it, "epoch": (it * t.batch_size) // sampler.epoch_length,
                       "lr": lr, "loss": total, **losses_f, "grad_norm": float(grad_norm),
                       "time": round(step_time, 4), "data_time": round(t_data, 4)})
        bar.update(it, total, lr)
        if it % t.checkpoint_interval == 0 or it == end:
            state = {
                "format": FORMAT, "iteration": it, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
                "scaler": scaler.state_dict() if use_amp else None, "rng": rng_state(),
                "config": cfg_dict, "torch_version": str(torch.__version__),
            }
            last_ck = save_checkpoint(state, work_dir, it, keep=t.keep_checkpoints)
            # The checkpoint's write time is not a training step's.
            t_prev = time.perf_counter()
    del data_iter
    return TrainResult(it, last_ck, losses_f, busy / timed if timed else 0.0)
