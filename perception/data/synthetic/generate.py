"""Generate a complete synthetic nuScenes-format dataset: ``generate(out_dir, SynthConfig(...))``.

The output loads with ``nuscenes.nuscenes.NuScenes(config.version, out_dir)`` and evaluates with
the devkit's ``DetectionEval`` on the standard split names, because the scene names come from the
devkit's own split lists (``nuscenes.utils.splits``):

- ``v1.0-mini``: ``scenes=None`` -> all 10 mini scenes (mini_train + mini_val);
- ``v1.0-trainval``: ``scenes=None`` -> ``DEFAULT_TRAINVAL_SCENES`` (20).

Rule for ``n`` scenes (both versions): ``n_val = max(1, round(n * v / (t + v)))`` where t, v are
the sizes of the version's train and val lists (mini: 8 / 2, trainval: 700 / 150), but at least
one train scene when n >= 2; then the first ``n - n_val`` names of the train list and the first
``n_val`` of the val list, in the devkit's order. So 'mini_val' / 'val' always has ground truth.
``val_scenes`` sets ``n_val`` instead (0 train scenes when it equals ``n``): a large val set to
rank models on (``perception synth --version v1.0-trainval --scenes 24 --val-scenes 24``: 960
val samples; a 7-scene val set holds ~7 instances of each rare class, and one of them decides a
class's AP).

Every scene is a pure function of (seed, scene name, config), built in its own process
(``workers``); parallel and serial runs give byte-identical output.

Val scenes show every detection class (``cover_classes="val"``, the default): where a scene's
draw leaves a class out (a bus, a trailer, a construction vehicle: rare by design, as in
nuScenes), parked or standing groups of it are added beside the ego's path. The devkit counts a
class without ground truth as AP 0 and error 1 in every mean, so a one- or two-scene val split
that lacks three classes could not score above mAP 0.7 however good the detector. Train scenes
keep the natural draw; a val scene is its uncovered draw plus the added groups.

CLI: ``perception synth --out OUT [--version v1.0-mini] [--scenes N] ...`` (perception/cli.py).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass

VERSIONS = ("v1.0-mini", "v1.0-trainval")
COVER_CHOICES = ("val", "all", "none")
DEFAULT_TRAINVAL_SCENES = 20
TABLE_NAMES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
               "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility")


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    version:       'v1.0-mini' | 'v1.0-trainval' (the tables folder and the split lists used)
    seed:          master seed; every scene is seeded by (seed, scene name)
    scenes:        number of scenes, None = the version's default (mini: 10, trainval: 20)
    duration_s:    seconds per scene (a sample every 0.5 s; 20 s -> 40 samples)
    image_width, image_height: camera images, pixels
    actor_density: scales the number of actors in the scenario (1.0 = nuScenes-like)
    noise:         scales the sensor models' noise (0 = noiseless geometry)
    sweeps:        also write the non-keyframe files (False: keyframe files only; all
                   sample_data records are kept, like a keyframe-only nuScenes download)
    workers:       processes, one scene per process at a time
    jpeg_quality:  1..100
    cover_classes: which scenes get every detection class in view: 'val' (the val split's
                   scenes), 'all' or 'none' (see the module docstring)
    val_scenes:    how many of the ``scenes`` are val scenes, None = the split lists' ratio (see
                   the module docstring); at most ``scenes`` and the version's val list
    """

    version: str = "v1.0-mini"
    seed: int = 0
    scenes: int | None = None
    duration_s: float = 20.0
    image_width: int = 640
    image_height: int = 360
    actor_density: float = 1.0
    noise: float = 1.0
    sweeps: bool = True
    workers: int = 2
    jpeg_quality: int = 90
    cover_classes: str = "val"
    val_scenes: int | None = None

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {self.version!r}")
        if self.scenes is not None and self.scenes < 1:
            raise ValueError("scenes must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")
        if self.val_scenes is not None:
            if self.val_scenes < 1:
                raise ValueError(f"val_scenes must be >= 1, got {self.val_scenes}")
            if self.scenes is None or self.val_scenes > self.scenes:
                raise ValueError(f"val_scenes ({self.val_scenes}) needs scenes >= val_scenes, "
                                 f"got scenes={self.scenes}")
        if self.cover_classes not in COVER_CHOICES:
            raise ValueError(f"cover_classes must be one of {COVER_CHOICES}, "
                             f"got {self.cover_classes!r}")


def _devkit_split_literals() -> dict[str, list[str]]:
    """The scene-name lists written as literals in the devkit's ``nuscenes/utils/splits.py``,
    read from its source: importing that module imports the whole devkit (matplotlib, sklearn,
    ~4 s), which a generator run does not otherwise need. A test checks the result against the
    imported module."""
    spec = importlib.util.find_spec("nuscenes")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nuscenes-devkit is not installed (pip install nuscenes-devkit)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "utils", "splits.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    lists: dict[str, list[str]] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:        # computed, e.g. train = sorted(set(detect + track))
                continue
            if isinstance(value, list):
                lists[node.targets[0].id] = value
    return lists


def _split_lists(version: str) -> tuple[list[str], list[str]]:
    """(train, val) scene names of ``version``, as ``nuscenes.utils.splits`` defines them."""
    lists = _devkit_split_literals()
    if version == "v1.0-mini":
        return list(lists["mini_train"]), list(lists["mini_val"])
    # The devkit: train = list(sorted(set(train_detect + train_track))).
    return sorted(set(lists["train_detect"] + lists["train_track"])), list(lists["val"])


def scene_names(config: SynthConfig) -> list[str]:
    """The scene names of ``config`` (see the module docstring for the rule), sorted."""
    train, val = _split_lists(config.version)
    n = config.scenes
    if n is None:
        n = len(train) + len(val) if config.version == "v1.0-mini" else DEFAULT_TRAINVAL_SCENES
    if n > len(train) + len(val):
        raise ValueError(f"{config.version} has only {len(train) + len(val)} train+val scenes")
    if config.val_scenes is not None:
        n_val = config.val_scenes
        if n_val > len(val):
            raise ValueError(f"{config.version} has only {len(val)} val scenes, "
                             f"val_scenes={n_val}")
    else:
        n_val = max(1, int(round(n * len(val) / (len(train) + len(val)))))
        if n >= 2:
            n_val = min(n_val, n - 1)
        n_val = min(n_val, len(val))
    n_train = n - n_val
    if n_train > len(train):
        raise ValueError("not enough train scenes")
    return sorted(train[:n_train] + val[:n_val])


def _job(config: SynthConfig, out_dir: str, name: str, val_scene: bool):
    """The SceneJob of scene ``name`` (``val_scene``: it belongs to the version's val split)."""
    from .writer import SceneJob

    cover = config.cover_classes == "all" or (config.cover_classes == "val" and val_scene)
    return SceneJob(dataroot=out_dir, scene_name=name, seed=config.seed,
                    duration_s=config.duration_s, image_width=config.image_width,
                    image_height=config.image_height, actor_density=config.actor_density,
                    noise=config.noise, sweeps=config.sweeps, jpeg_quality=config.jpeg_quality,
                    cover_classes=cover)


def _run_job(job):
    """Worker entry: one scene, BLAS and OpenCV pinned to one thread (the processes already fill
    the cores; measured: OpenCV's own threads made each image ~20 % slower with 2 workers on
    2 cores)."""
    import cv2

    from .writer import write_scene

    cv2.setNumThreads(1)

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:       # pragma: no cover - threadpoolctl ships with the env
        return job.scene_name, write_scene(job)
    with threadpool_limits(limits=1):
        return job.scene_name, write_scene(job)


def _clear_previous_output(out_dir: str, version: str) -> None:
    """Remove the blobs and tables of an earlier synthetic run in ``out_dir`` (recognised by its
    synthetic_config.yaml), so that e.g. a keyframe-only run leaves no stale sweep files behind.
    Anything else in the folder is left alone."""
    import shutil

    if not os.path.exists(os.path.join(out_dir, "synthetic_config.yaml")):
        return
    for sub in ("samples", "sweeps", "maps", version):
        path = os.path.join(out_dir, sub)
        if os.path.isdir(path):
            shutil.rmtree(path)
    os.remove(os.path.join(out_dir, "synthetic_config.yaml"))


def generate(out_dir: str | os.PathLike, config: SynthConfig = SynthConfig(),
             verbose: bool = True) -> dict:
    """Write the dataset of ``config`` into ``out_dir`` (created if needed; the output of an
    earlier synthetic run there is replaced).

    Layout: <out>/<version>/*.json (13 tables), samples/, sweeps/, maps/, synthetic_config.yaml.
    Returns a summary dict: version, scenes (names), samples, sample_data, sample_annotation,
    instances, files, seconds, per-stage seconds summed over scenes (``timing``)."""
    import yaml

    from .writer import standard_tables

    t_start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    _clear_previous_output(out_dir, config.version)
    os.makedirs(out_dir, exist_ok=True)
    names = scene_names(config)
    val = set(_split_lists(config.version)[1])
    jobs = [_job(config, out_dir, n, n in val) for n in names]
    log = (lambda msg: print(msg, flush=True)) if verbose else (lambda msg: None)
    log(f"[synthetic] {config.version}: {len(jobs)} scenes x {config.duration_s:g} s, "
        f"{config.workers} worker(s) -> {out_dir}")

    results = {}
    if config.workers <= 1 or len(jobs) == 1:
        for job in jobs:
            name, res = _run_job(job)
            results[name] = res
            log(f"[synthetic]   {name}: {res.stats['seconds']:.1f} s ({len(results)}/{len(jobs)})")
    else:
        # A fresh interpreter per worker pool (forkserver, else spawn), never a fork of this
        # process: the caller may hold threads (a DataLoader, torch's pool, a test runner) whose
        # locks a forked child would inherit held. ProcessPoolExecutor, unlike Pool, raises
        # BrokenProcessPool when a worker dies (e.g. killed for memory) instead of waiting
        # forever. Every scene derives its randomness from (seed, name) alone, so the process
        # layout cannot change the output.
        from concurrent.futures import ProcessPoolExecutor, as_completed

        methods = mp.get_all_start_methods()
        ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=min(config.workers, len(jobs)), mp_context=ctx) as pool:
            for fut in as_completed([pool.submit(_run_job, job) for job in jobs]):
                name, res = fut.result()
                results[name] = res
                log(f"[synthetic]   {name}: {res.stats['seconds']:.1f} s ({len(results)}/{len(jobs)})")

    tables = standard_tables()
    for key in TABLE_NAMES:
        tables.setdefault(key, [])
    for name in names:            # merged in scene-name order: independent of completion order
        for key, recs in results[name].tables.items():
            tables[key].extend(recs)
    table_dir = os.path.join(out_dir, config.version)
    os.makedirs(table_dir, exist_ok=True)
    for key in TABLE_NAMES:
        with open(os.path.join(table_dir, f"{key}.json"), "w") as f:
            json.dump(tables[key], f, indent=0)

    resolved = dataclasses.asdict(config)
    resolved["scenes"] = len(names)
    resolved["scene_names"] = names
    with open(os.path.join(out_dir, "synthetic_config.yaml"), "w") as f:
        yaml.safe_dump(resolved, f, sort_keys=False)

    timing: dict[str, float] = {}
    for res in results.values():
        for k, v in res.stats["timing"].items():
            timing[k] = timing.get(k, 0.0) + v
    summary = {
        "version": config.version, "scenes": names,
        "samples": len(tables["sample"]), "sample_data": len(tables["sample_data"]),
        "sample_annotation": len(tables["sample_annotation"]), "instances": len(tables["instance"]),
        "files": sum(r.stats["files"] for r in results.values()),
        "seconds": time.perf_counter() - t_start,
        "scene_seconds": {n: results[n].stats["seconds"] for n in names},
        "timing": timing,
        "face_points_dropped": sum(r.stats["face_points_dropped"] for r in results.values()),
    }
    log(f"[synthetic] done: {summary['samples']} samples, {summary['sample_data']} sample_data, "
        f"{summary['sample_annotation']} annotations, {summary['files']} files in "
        f"{summary['seconds']:.1f} s ({summary['face_points_dropped']} keyframe points dropped "
        f"for lying within 1 um of a box face)")
    log("[synthetic] seconds per stage, summed over scenes: "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(timing.items(), key=lambda kv: -kv[1])))
    return summary
