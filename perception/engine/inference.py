"""Inference over a split and the nuScenes results JSON (the official submission format).

    items = run_inference(model, loader, device="cpu")            # [(token, Detections, global_T_ego)]
    results = to_results(items, meta=results_meta(("camera", "lidar")))
    write_results(results, out_dir / "results_nusc.json")

Each box becomes ``{"sample_token", "translation" (global, m), "size" (w, l, h m), "rotation"
(quaternion w, x, y, z, global), "velocity" (vx, vy global m/s), "detection_name",
"detection_score", "attribute_name"}``. Boxes go from the sample's ego frame to the global frame
through ``Frame.global_T_ego`` (``Boxes3D.transform``), and to the nuScenes layout through
``Boxes3D.to_nuscenes``, the one place that knows it.

Attributes: the devkit needs a valid attribute for every class that has them (an empty one
counts as wrong in AAE) and ``""`` for traffic cones and barriers. A predicted attribute valid
for the class is used; otherwise :func:`default_attribute` infers one from the speed, as the
common nuScenes baselines do.
"""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from perception.structures.instances import Detections
from perception.structures.labels import (
    ATTRIBUTE_NAMES,
    CYCLE_CLASSES,
    DETECTION_CLASSES,
    VEHICLE_CLASSES,
    attribute_prefix,
)

# The devkit caps a sample at 500 boxes (load_prediction asserts it).
MAX_BOXES_PER_SAMPLE = 500
# Below this speed (m/s) an object is taken as standing still: the velocity head's error on
# static objects is of this order.
MOVING_SPEED = 0.2


def default_attribute(name: str, speed: float) -> str:
    """A valid nuScenes attribute for class ``name`` from its speed (m/s); "" for classes without.

    Vehicles: moving above ``MOVING_SPEED``, else parked (buses: stopped, they rarely park on
    the road); pedestrians: moving / standing; cycles: with rider / without rider.
    """
    moving = math.isfinite(speed) and speed > MOVING_SPEED
    if name in VEHICLE_CLASSES:
        if moving:
            return "vehicle.moving"
        return "vehicle.stopped" if name == "bus" else "vehicle.parked"
    if name == "pedestrian":
        return "pedestrian.moving" if moving else "pedestrian.standing"
    if name in CYCLE_CLASSES:
        return "cycle.with_rider" if moving else "cycle.without_rider"
    return ""


def attribute_name(name: str, predicted: int, speed: float) -> str:
    """The predicted attribute index if it is valid for class ``name``, else the default."""
    prefix = attribute_prefix(name)
    if prefix is None:
        return ""
    if 0 <= predicted < len(ATTRIBUTE_NAMES) and ATTRIBUTE_NAMES[predicted].startswith(prefix):
        return ATTRIBUTE_NAMES[predicted]
    return default_attribute(name, speed)


def results_meta(modalities: Iterable[str]) -> dict:
    """The submission's ``meta`` block for the sensors used."""
    m = set(modalities)
    return {"use_camera": "camera" in m, "use_lidar": "lidar" in m, "use_radar": "radar" in m,
            "use_map": False, "use_external": False}


def detections_to_boxes(token: str, dets: Detections, global_T_ego: Tensor,
                        classes: Sequence[str] = DETECTION_CLASSES,
                        max_boxes: int = MAX_BOXES_PER_SAMPLE) -> list[dict]:
    """One sample's Detections (its ego frame) -> result box dicts in the global frame.

    Args:
        token: sample token.
        dets: N detections, ego frame of the sample.
        global_T_ego: (4, 4) float64 pose of that ego frame.
        classes: label vocabulary.
        max_boxes: keep the highest-scoring ones only.
    """
    dets = dets.to("cpu")
    if len(dets) > max_boxes:
        dets = dets[torch.argsort(dets.scores, descending=True, stable=True)[:max_boxes]]
    boxes = dets.boxes.to(torch.float64).transform(global_T_ego.to("cpu", torch.float64))
    center, wlh, quat, vel = boxes.to_nuscenes()
    # A NaN velocity would be written as the non-JSON token NaN; 0 is "not moving".
    vel = np.nan_to_num(vel, nan=0.0, posinf=0.0, neginf=0.0)
    scores = dets.scores.double().numpy()
    labels = dets.labels.numpy()
    attrs = (dets.attributes.numpy() if dets.attributes is not None
             else np.full(len(dets), -1, dtype=np.int64))
    out = []
    for i in range(len(dets)):
        name = classes[int(labels[i])]
        speed = float(np.hypot(vel[i, 0], vel[i, 1]))
        out.append({
            "sample_token": token,
            "translation": [float(v) for v in center[i]],
            "size": [float(v) for v in wlh[i]],
            "rotation": [float(v) for v in quat[i]],
            "velocity": [float(v) for v in vel[i]],
            "detection_name": name,
            "detection_score": float(scores[i]),
            "attribute_name": attribute_name(name, int(attrs[i]), speed),
        })
    return out


def boxes_to_detections(token: str, rows: Sequence[dict],
                        classes: Sequence[str] = DETECTION_CLASSES) -> Detections:
    """One sample's result box dicts -> Detections in the global frame (float64), the converse
    of :func:`detections_to_boxes` (tools that rework a results file). A class outside
    ``classes`` or an unknown attribute name raises ``ValueError`` naming the sample."""
    from perception.structures.boxes import Boxes3D

    unknown = {r["detection_name"] for r in rows} - set(classes)
    if unknown:
        raise ValueError(f"sample {token}: unknown detection_name {sorted(unknown)}")
    bad = {r["attribute_name"] for r in rows} - {"", *ATTRIBUTE_NAMES}
    if bad:
        raise ValueError(f"sample {token}: unknown attribute_name {sorted(bad)}")
    if not rows:
        return Detections(Boxes3D(torch.zeros(0, 9, dtype=torch.float64)),
                          torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64),
                          torch.zeros(0, dtype=torch.int64))
    boxes = Boxes3D.from_nuscenes(
        [r["translation"] for r in rows], [r["size"] for r in rows],
        [r["rotation"] for r in rows], [r["velocity"] for r in rows], dtype=torch.float64)
    return Detections(
        boxes, torch.tensor([r["detection_score"] for r in rows], dtype=torch.float64),
        torch.tensor([classes.index(r["detection_name"]) for r in rows], dtype=torch.int64),
        torch.tensor([ATTRIBUTE_NAMES.index(r["attribute_name"]) if r["attribute_name"] else -1
                      for r in rows], dtype=torch.int64))


def to_results(items: Iterable[tuple[str, Detections, Tensor]], meta: dict,
               classes: Sequence[str] = DETECTION_CLASSES) -> dict:
    """``[(token, Detections, global_T_ego)]`` -> ``{"meta": meta, "results": {token: boxes}}``."""
    return {"meta": dict(meta),
            "results": {tok: detections_to_boxes(tok, d, T, classes) for tok, d, T in items}}


def write_results(results: dict, path: str | os.PathLike) -> Path:
    """Write the results JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results))
    os.replace(tmp, path)
    return path


@torch.no_grad()
def run_inference(model, loader, *, device="cpu", modalities: Sequence[str] | None = None,
                  progress: bool = True, on_frame=None, temporal=None,
                  face_motion: bool = False) -> list[tuple[str, Detections, Tensor]]:
    """Run ``model.predict`` over every batch of ``loader``.

    Args:
        model: a ``FusionDetector`` (put in eval mode here).
        loader: yields ``Batch`` es (``perception.structures.collate``), or lists of ``Frame`` s
            (``build_eval_loader``), which are collated here after frames with none of the
            requested sensors are set aside: those get empty Detections and a warning.
        device: where the model runs.
        modalities: sensors to use (None = all the model has).
        progress: a progress bar on stderr.
        on_frame: optional ``f(frame, detections)`` called for every Frame (loaders of Frames
            only), e.g. to draw it.
        temporal: optional ``perception.models.temporal.TemporalStep``, applied to every
            frame's detections in loader order (which must be time order within a scene).
        face_motion: the last step, after ``temporal``: moving vehicles, cycles and pedestrians
            face their velocity (``perception.models.standstill.face_motion``).
    Returns:
        One ``(sample token, Detections in its ego frame (CPU), global_T_ego (4, 4) float64)``
        per sample, in loader order.
    """
    from tqdm import tqdm

    from perception.models.standstill import face_motion as face
    from perception.structures.batch import collate

    def finish(d: Detections) -> Detections:
        return face(d, model.head.classes) if face_motion else d

    model.eval()
    wanted = set(modalities if modalities is not None else model.modalities)
    out = []
    total = len(loader) if hasattr(loader, "__len__") else None
    for item in tqdm(loader, total=total, desc="inference", unit="batch", disable=not progress,
                     file=sys.stderr, dynamic_ncols=True):
        if isinstance(item, list):
            # Frames (the eval loader's form): a frame whose requested sensors all failed to load
            # gets no detections and a warning, instead of ending the evaluation.
            frames = {f.token: f for f in item}
            usable = [f for f in item if f.modalities & wanted]
            for f in item:
                if not f.modalities & wanted:
                    warnings.warn(f"sample {f.token}: none of the sensors {sorted(wanted)} could "
                                  "be loaded; it gets no detections", RuntimeWarning, stacklevel=2)
            dets = {}
            if usable:
                batch = collate(usable)
                for token, d in zip(batch.tokens, model.predict(batch.to(device),
                                                                modalities=modalities)):
                    dets[token] = d.to("cpu")
            for token, f in frames.items():
                d = dets.get(token, Detections.cat([]))
                if temporal is not None:
                    d = temporal(f.scene_token, f.timestamp, f.global_T_ego, d)
                d = finish(d)
                out.append((token, d, f.global_T_ego.cpu()))
                if on_frame is not None:
                    on_frame(f, d)
            continue
        batch = item
        if temporal is not None:
            raise ValueError("temporal velocity needs a loader of Frames (build_eval_loader): "
                             "a Batch carries no scene")
        dets = model.predict(batch.to(device), modalities=modalities)
        for b, d in enumerate(dets):
            out.append((batch.tokens[b], finish(d.to("cpu")), batch.global_T_ego[b].cpu()))
    return out


# ---------------------------------------------------------------------------------------------
# A checkpoint over a split -> results JSON -> metrics (`perception eval`)
# ---------------------------------------------------------------------------------------------
def build_eval_loader(cfg, dataroot, version: str, split: str, modalities: Sequence[str], *,
                      batch_size: int = 1, num_workers: int = 0, nusc=None):
    """A sequential DataLoader of Batches over a split, loading only ``modalities``; images are
    resized to the network size in the workers (the same fixed view as ``resize_images``)."""
    from perception.data.augment import AugmentedDataset
    from perception.data.nuscenes import NuScenesDataset
    from perception.engine.train import dataset_modalities
    from perception.structures.batch import collate

    d = cfg.data
    # A corrupt or missing sensor file drops that sensor from its frame (with a warning naming
    # the file) rather than ending the evaluation: the model masks absent sensors.
    base = NuScenesDataset(dataroot, version, split, sweeps=d.lidar_sweeps,
                           radar_sweeps=d.radar_sweeps, modalities=dataset_modalities(modalities),
                           nusc=nusc, on_error="skip_sensor")
    image_size = cfg.model.camera.image_size if "camera" in modalities else None
    ds = AugmentedDataset(base, None, image_size)
    # Lists of frames: run_inference collates them after setting aside frames left with none of
    # the requested sensors.
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                       num_workers=num_workers, collate_fn=list)


def compute_metrics(results_path, dataroot, version: str, split: str, out_dir, *,
                    backend: str = "fast", nusc=None) -> dict:
    """nuScenes detection metrics; writes ``out_dir/metrics_summary.json``.

    Uses ``perception.evaluation.evaluate`` (backend fast | devkit | check); where that package
    is missing, the devkit's ``DetectionEval`` directly.
    """
    try:
        from perception.evaluation import evaluate
    except ImportError:
        evaluate = None
    if evaluate is not None:
        return evaluate(results_path, dataroot, version, split, out_dir, backend=backend, nusc=nusc)
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    if nusc is None:
        from nuscenes.nuscenes import NuScenes

        nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    ev = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(results_path), split,
                       str(out_dir), verbose=False)
    return ev.main(plot_examples=0, render_curves=False)


def bev_picture_writer(out_dir, min_score: float = 0.3):
    """An ``on_frame`` callback writing ``out_dir/NNNN_<token>.png`` per frame: the bird's-eye view
    (LiDAR, radar with velocities) with the ground truth (thick) and the detections scoring at
    least ``min_score`` (thin), coloured by class."""
    import cv2

    from perception.vis.draw import draw_bev

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count = [0]

    def write(frame, dets: Detections) -> None:
        keep = dets.scores >= min_score
        img = draw_bev(frame, pred_boxes=dets.boxes[keep], pred_labels=dets.labels[keep])
        label = f"{frame.token[:12]}  GT {0 if frame.gt is None else len(frame.gt)}  " \
                f"detections >= {min_score:g}: {int(keep.sum())}"
        cv2.putText(img, label, (12, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (235, 235, 235), 2,
                    cv2.LINE_AA)
        path = out_dir / f"{count[0]:04d}_{frame.token}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        count[0] += 1

    return write


def evaluate_checkpoint(cfg, checkpoint, dataroot, version: str, split: str, out_dir, *,
                        modalities: Sequence[str] | None = None, metrics: str = "fast",
                        device=None, batch_size: int = 1, num_workers: int = 0,
                        progress: bool = True, nusc=None, bev_dir=None,
                        bev_min_score: float = 0.3) -> dict:
    """Run a checkpoint over a split, write ``out_dir/results_nusc.json`` and the metrics.

    Args:
        cfg: the ``ExperimentConfig`` the checkpoint was trained with.
        checkpoint: path of a checkpoint (or a bare state_dict file).
        modalities: sensors to use (a subset of the model's), None = all.
        metrics: "fast" | "devkit" | "check" (``perception.evaluation``), or "none" to stop
            after writing the results.
        bev_dir: if set, a bird's-eye-view picture per frame there (``bev_picture_writer``),
            detections from ``bev_min_score``.
    Returns:
        The metrics summary (the devkit's ``metrics_summary.json`` content), {} for "none".
    """
    from perception.engine.checkpoint import model_state
    from perception.models import build_model

    mods = tuple(cfg.model.modalities) if modalities is None else tuple(modalities)
    unknown = set(mods) - set(cfg.model.modalities)
    if not mods or unknown:
        raise ValueError(f"--modalities {list(mods)}: the model has {list(cfg.model.modalities)}")
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(cfg.model)
    model.load_state_dict(model_state(checkpoint))
    model.to(device)
    if nusc is None:
        from nuscenes.nuscenes import NuScenes

        nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    loader = build_eval_loader(cfg, dataroot, version, split, mods, batch_size=batch_size,
                               num_workers=num_workers, nusc=nusc)
    on_frame = None if bev_dir is None else bev_picture_writer(bev_dir, bev_min_score)
    temporal = None
    if cfg.model.temporal_velocity or cfg.model.temporal_still or cfg.model.temporal_score > 0:
        from perception.models.temporal import TemporalStep

        temporal = TemporalStep(cfg.model.classes, velocity=cfg.model.temporal_velocity,
                                still=cfg.model.temporal_still,
                                score_weight=cfg.model.temporal_score,
                                confirm=cfg.model.temporal_confirm or None)
    items = run_inference(model, loader, device=device, modalities=mods, progress=progress,
                          on_frame=on_frame, temporal=temporal,
                          face_motion=cfg.model.face_motion)
    out_dir = Path(out_dir)
    path = write_results(to_results(items, results_meta(mods), cfg.model.classes),
                         out_dir / "results_nusc.json")
    if metrics == "none":
        return {}
    return compute_metrics(path, dataroot, version, split, out_dir, backend=metrics, nusc=nusc)
