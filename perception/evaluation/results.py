"""Columnar boxes for the detection metrics: loading results JSON, ground truth and the filters.

The devkit keeps every box as a Python object (``DetectionBox``) and filters them one by one;
at 3 million predictions (6,019 samples x 500) building those objects alone takes about a minute.
Here a set of boxes is a handful of numpy arrays, and every step is written so that it gives the
very same float64 values as the devkit's per-box code (same operations in the same order), because
the matching compares distances against thresholds and a last-bit difference could flip a match.
"""
from __future__ import annotations

import json
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nuscenes.eval.detection.constants import ATTRIBUTE_NAMES, DETECTION_NAMES

CLASS_INDEX = {name: i for i, name in enumerate(DETECTION_NAMES)}
# '' (no attribute) is -1: the devkit treats it as "accuracy undefined" (NaN), not as a value.
ATTRIBUTE_INDEX = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}
ATTRIBUTE_INDEX[""] = -1
BIKE_CLASSES = (CLASS_INDEX["bicycle"], CLASS_INDEX["motorcycle"])


@dataclass
class BoxArrays:
    """N boxes as arrays, grouped by sample in the order of ``sample_tokens``.

    Row order is the order of the devkit's ``EvalBoxes.all`` (samples in insertion order, boxes
    in file order within a sample). That order matters: the devkit breaks score ties by it, and
    breaks equal-distance ties by the ground-truth position within its sample.
    """
    sample_tokens: list[str]
    sample: np.ndarray          # (N,) int64 index into sample_tokens, non-decreasing
    label: np.ndarray           # (N,) int64 index into DETECTION_NAMES
    translation: np.ndarray     # (N, 3) float64, global frame
    size: np.ndarray            # (N, 3) float64 w, l, h
    rotation: np.ndarray        # (N, 4) float64 quaternion w, x, y, z
    velocity: np.ndarray        # (N, 2) float64, NaN allowed (as in the devkit)
    score: np.ndarray           # (N,) float64 (-1.0 for ground truth)
    attribute: np.ndarray       # (N,) int64 index into ATTRIBUTE_NAMES, -1 for none
    num_pts: np.ndarray         # (N,) int64 LiDAR + radar points, -1 when unknown
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.sample.shape[0])

    def take(self, mask_or_index: np.ndarray) -> "BoxArrays":
        """Rows selected by a boolean mask or an increasing index (order is kept)."""
        i = mask_or_index
        return BoxArrays(self.sample_tokens, self.sample[i], self.label[i], self.translation[i],
                         self.size[i], self.rotation[i], self.velocity[i], self.score[i],
                         self.attribute[i], self.num_pts[i], self.meta)

    @classmethod
    def empty(cls, sample_tokens: Sequence[str] = ()) -> "BoxArrays":
        return cls(list(sample_tokens), np.zeros(0, np.int64), np.zeros(0, np.int64),
                   np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 2)),
                   np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))


# ----------------------------------------------------------------------------------------------
# From the devkit's EvalBoxes (tests, and ground truth loaded with the devkit's load_gt)
# ----------------------------------------------------------------------------------------------
def from_eval_boxes(eval_boxes) -> BoxArrays:
    """Convert a devkit ``EvalBoxes`` of ``DetectionBox`` (keeps sample and box order)."""
    tokens = list(eval_boxes.sample_tokens)
    boxes = [b for t in tokens for b in eval_boxes.boxes[t]]
    counts = [len(eval_boxes.boxes[t]) for t in tokens]
    if not boxes:
        return BoxArrays.empty(tokens)
    return BoxArrays(
        sample_tokens=tokens,
        sample=np.repeat(np.arange(len(tokens), dtype=np.int64), counts),
        label=np.array([CLASS_INDEX[b.detection_name] for b in boxes], np.int64),
        translation=np.array([b.translation for b in boxes], np.float64).reshape(-1, 3),
        size=np.array([b.size for b in boxes], np.float64).reshape(-1, 3),
        rotation=np.array([b.rotation for b in boxes], np.float64).reshape(-1, 4),
        velocity=np.array([b.velocity for b in boxes], np.float64).reshape(-1, 2),
        score=np.array([b.detection_score for b in boxes], np.float64),
        attribute=np.array([ATTRIBUTE_INDEX[b.attribute_name] for b in boxes], np.int64),
        num_pts=np.array([b.num_pts for b in boxes], np.int64),
    )


# ----------------------------------------------------------------------------------------------
# Results JSON (the submission format) without building DetectionBox objects
# ----------------------------------------------------------------------------------------------
def read_results(results: str | Path | Mapping[str, Any]) -> dict:
    """The results JSON as a dict (a path is read; a dict is used as it is)."""
    if isinstance(results, (str, Path)):
        with open(results) as f:
            data = json.load(f)
    else:
        data = results
    if "results" not in data:
        raise ValueError("results JSON has no field `results` (the nuScenes submission format is "
                         "{'meta': {...}, 'results': {sample_token: [box, ...]}})")
    if "meta" not in data:
        raise ValueError("results JSON has no field `meta` (the devkit requires it)")
    return data


def _column(values: list, width: int, name: str) -> np.ndarray:
    """(N, width) float64 from N lists; flattening first is ~5x faster than np.array(lists)."""
    if len(values) == 0:
        return np.zeros((0, width))
    try:
        bad_length = set(map(len, values)) != {width}
    except TypeError:
        bad_length = True
    if bad_length:
        raise ValueError(f"every box needs `{name}` as a list of {width} numbers")
    try:
        flat = np.fromiter(chain.from_iterable(values), np.float64, count=width * len(values))
    except (TypeError, ValueError) as e:
        raise ValueError(f"every box needs `{name}` as {width} numbers: {e}") from None
    return flat.reshape(-1, width)


def results_to_arrays(results: Mapping[str, list], max_boxes_per_sample: int,
                      sample_tokens: Sequence[str] | None = None) -> BoxArrays:
    """Predictions of a results dict ({sample_token: [box dict, ...]}) as BoxArrays.

    Applies the devkit's checks (``DetectionBox`` asserts and the per-sample cap of
    ``load_prediction``) as ValueErrors. ``sample_tokens`` restricts to those samples, in that
    order, like the devkit's ``load_prediction_of_sample_tokens`` (custom splits).
    """
    tokens = list(results.keys()) if sample_tokens is None else list(sample_tokens)
    per_sample = [results[t] for t in tokens]
    counts = [len(b) for b in per_sample]
    for t, n in zip(tokens, counts):
        if n > max_boxes_per_sample:
            raise ValueError(f"sample {t} has {n} predicted boxes; only <= {max_boxes_per_sample} "
                             "boxes per sample are allowed")
    boxes = [b for bs in per_sample for b in bs]
    if not boxes:
        return BoxArrays.empty(tokens)
    try:
        label = np.array([CLASS_INDEX[b["detection_name"]] for b in boxes], np.int64)
    except KeyError as e:
        raise ValueError(f"unknown or missing detection_name {e}; expected one of {DETECTION_NAMES}") from None
    try:
        attribute = np.array([ATTRIBUTE_INDEX[b["attribute_name"]] for b in boxes], np.int64)
    except KeyError as e:
        raise ValueError(f"unknown or missing attribute_name {e}; expected '' or one of {ATTRIBUTE_NAMES}") from None
    # Defaults as in DetectionBox.deserialize: no score -> -1.0, no num_pts -> -1.
    score = np.array([float(b.get("detection_score", -1.0)) for b in boxes], np.float64)
    num_pts = np.array([int(b.get("num_pts", -1)) for b in boxes], np.int64)
    arrays = BoxArrays(
        sample_tokens=tokens,
        sample=np.repeat(np.arange(len(tokens), dtype=np.int64), counts),
        label=label,
        translation=_column([b["translation"] for b in boxes], 3, "translation"),
        size=_column([b["size"] for b in boxes], 3, "size"),
        rotation=_column([b["rotation"] for b in boxes], 4, "rotation"),
        velocity=_column([b["velocity"] for b in boxes], 2, "velocity"),
        score=score, attribute=attribute, num_pts=num_pts)
    # The same NaN checks as the DetectionBox constructor (velocity may be NaN there too).
    for name in ("translation", "size", "rotation", "score"):
        if np.isnan(getattr(arrays, name)).any():
            raise ValueError(f"`{name}` may not be NaN")
    return arrays


# ----------------------------------------------------------------------------------------------
# Ground truth and the devkit's filters (add_center_dist + filter_eval_boxes), vectorized
# ----------------------------------------------------------------------------------------------
def ego_positions(nusc, sample_tokens: Sequence[str]) -> np.ndarray:
    """(S, 3) ego translation at each sample's LIDAR_TOP keyframe (the pose add_center_dist uses)."""
    out = np.empty((len(sample_tokens), 3))
    for i, token in enumerate(sample_tokens):
        sd = nusc.get("sample_data", nusc.get("sample", token)["data"]["LIDAR_TOP"])
        out[i] = nusc.get("ego_pose", sd["ego_pose_token"])["translation"]
    return out


def bike_racks(nusc, sample_tokens: Sequence[str]) -> dict[int, list[dict]]:
    """static_object.bicycle_rack annotations per sample (by position in sample_tokens)."""
    racks: dict[int, list[dict]] = {}
    for i, token in enumerate(sample_tokens):
        recs = [a for a in (nusc.get("sample_annotation", t) for t in nusc.get("sample", token)["anns"])
                if a["category_name"] == "static_object.bicycle_rack"]
        if recs:
            racks[i] = recs
    return racks


def filter_boxes(nusc, boxes: BoxArrays, class_range: Mapping[str, float],
                 ego: np.ndarray | None = None,
                 racks: dict[int, list[dict]] | None = None) -> BoxArrays:
    """The devkit's add_center_dist + filter_eval_boxes: class range, no points, bike racks.

    ``ego`` and ``racks`` (per sample of ``boxes.sample_tokens``) may be passed when ground truth
    and predictions share them, to look them up once.
    """
    if ego is None:
        ego = ego_positions(nusc, boxes.sample_tokens)
    if len(boxes) == 0:
        return boxes
    # add_center_dist subtracts the pose per component; ego_dist is sqrt(x**2 + y**2): the same
    # float64 operations here, so the `<` against the class range decides identically.
    rel = boxes.translation[:, :2] - ego[boxes.sample, :2]
    ego_dist = np.sqrt(rel[:, 0] ** 2 + rel[:, 1] ** 2)
    max_dist = np.array([class_range[name] for name in DETECTION_NAMES], np.float64)
    keep = (ego_dist < max_dist[boxes.label]) & (boxes.num_pts != 0)

    # Bike racks: a bicycle/motorcycle whose center lies in a bicycle_rack annotation box is
    # dropped. Only boxes within a rack's circumscribed sphere can be inside it; for those we ask
    # the devkit's own points_in_box, point by point as the devkit does, so that a center on a
    # face of the rack decides exactly as there.
    if racks is None:
        racks = bike_racks(nusc, boxes.sample_tokens)
    if racks:
        from nuscenes.utils.data_classes import Box
        from nuscenes.utils.geometry_utils import points_in_box
        from pyquaternion import Quaternion

        bike = keep & np.isin(boxes.label, BIKE_CLASSES) & np.isin(boxes.sample, list(racks))
        for i in np.flatnonzero(bike):
            center = boxes.translation[i]
            for rec in racks[int(boxes.sample[i])]:
                reach = 0.5 * float(np.linalg.norm(rec["size"])) * (1 + 1e-6) + 1e-6
                if np.linalg.norm(center - np.asarray(rec["translation"], np.float64)) > reach:
                    continue
                rack = Box(rec["translation"], rec["size"], Quaternion(rec["rotation"]))
                if np.sum(points_in_box(rack, np.expand_dims(np.array(center), axis=1))) > 0:
                    keep[i] = False
                    break
    return boxes.take(keep)


def split_sample_tokens(nusc, split: str) -> list[str]:
    """Sample tokens of a split in the order of the sample table (the order load_gt uses)."""
    from nuscenes.utils.splits import create_splits_scenes, is_predefined_split

    if is_predefined_split(split_name=split):
        version = nusc.version
        # The same split/version compatibility rules as the devkit's load_gt.
        need = {"train": "trainval", "val": "trainval", "train_detect": "trainval",
                "train_track": "trainval", "mini_train": "mini", "mini_val": "mini", "test": "test"}
        if split not in need:
            raise ValueError(f"split {split} cannot be mapped to a nuScenes version")
        if not version.endswith(need[split]):
            raise ValueError(f"split {split} is not compatible with nuScenes version {version}")
        scenes = set(create_splits_scenes()[split])
    else:
        from nuscenes.utils.splits import get_scenes_of_custom_split
        scenes = set(get_scenes_of_custom_split(split_name=split, nusc=nusc))
    scene_names = {s["token"]: s["name"] for s in nusc.scene}
    return [s["token"] for s in nusc.sample if scene_names[s["scene_token"]] in scenes]


def load_ground_truth(nusc, sample_tokens: Sequence[str]) -> BoxArrays:
    """Ground truth of the given samples, as the devkit's load_gt builds it, without objects.

    Velocities follow ``NuScenes.box_velocity`` (centered difference over prev/next annotation,
    NaN beyond 1.5 s, or 3 s when centered) computed for all annotations at once.
    """
    from nuscenes.eval.detection.utils import category_to_detection_name

    attr_name = {a["token"]: a["name"] for a in nusc.attribute}
    ann_index = nusc._token2ind["sample_annotation"]
    anns = nusc.sample_annotation
    sample_time = {s["token"]: s["timestamp"] for s in nusc.sample}

    rows, counts = [], []
    for token in sample_tokens:
        n = 0
        for ann_token in nusc.get("sample", token)["anns"]:
            ann = anns[ann_index[ann_token]]
            name = category_to_detection_name(ann["category_name"])
            if name is None:
                continue
            rows.append(ann)
            n += 1
        counts.append(n)
    if not rows:
        return BoxArrays.empty(sample_tokens)

    attribute = []
    for ann in rows:
        if len(ann["attribute_tokens"]) > 1:
            raise ValueError("GT annotations must not have more than one attribute")
        attribute.append(ATTRIBUTE_INDEX[attr_name[ann["attribute_tokens"][0]]]
                         if ann["attribute_tokens"] else -1)

    # box_velocity, vectorized: first/last are prev/next when present, else the box itself.
    def neighbour(ann, key):
        return anns[ann_index[ann[key]]] if ann[key] != "" else ann

    has_prev = np.array([a["prev"] != "" for a in rows])
    has_next = np.array([a["next"] != "" for a in rows])
    first = [neighbour(a, "prev") for a in rows]
    last = [neighbour(a, "next") for a in rows]
    pos_first = np.array([a["translation"] for a in first], np.float64)
    pos_last = np.array([a["translation"] for a in last], np.float64)
    # 1e-6 * timestamp per side, then the difference, exactly as box_velocity does it.
    t_first = 1e-6 * np.array([sample_time[a["sample_token"]] for a in first], np.float64)
    t_last = 1e-6 * np.array([sample_time[a["sample_token"]] for a in last], np.float64)
    time_diff = t_last - t_first
    max_time_diff = np.where(has_prev & has_next, 1.5 * 2, 1.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        velocity = (pos_last - pos_first) / time_diff[:, None]
    velocity[(time_diff > max_time_diff) | ~(has_prev | has_next)] = np.nan

    return BoxArrays(
        sample_tokens=list(sample_tokens),
        sample=np.repeat(np.arange(len(sample_tokens), dtype=np.int64), counts),
        label=np.array([CLASS_INDEX[category_to_detection_name(a["category_name"])] for a in rows], np.int64),
        translation=np.array([a["translation"] for a in rows], np.float64),
        size=np.array([a["size"] for a in rows], np.float64),
        rotation=np.array([a["rotation"] for a in rows], np.float64),
        velocity=np.ascontiguousarray(velocity[:, :2]),
        score=np.full(len(rows), -1.0),
        attribute=np.array(attribute, np.int64),
        num_pts=np.array([a["num_lidar_pts"] + a["num_radar_pts"] for a in rows], np.int64),
    )
