"""Measure a nuScenes-format dataset with the devkit: ``summarize(dataroot, version)``.

Works the same on the synthetic datasets and on real nuScenes (e.g. the one-scene copy in
shared/data), so the two can be compared figure by figure (see shared/data/README.md for the
real figures): rates per channel, LiDAR points per keyframe sweep, radar returns and clutter,
hard-box shares, visibility histogram, boxes per class.

Only files that exist are measured (a keyframe-only download has no sweep files).
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict

import numpy as np


def _radar_xyz(path: str) -> np.ndarray:
    from nuscenes.utils.data_classes import RadarPointCloud

    pc = RadarPointCloud.from_file(path, invalid_states=list(range(256)),
                                   dynprop_states=list(range(256)), ambig_states=list(range(256)))
    return np.asarray(pc.points[:3].T, dtype=np.float64)


def _inside_any(xyz: np.ndarray, boxes: list) -> np.ndarray:
    """(N,) bool: the devkit's ``points_in_box`` for any of ``boxes`` (candidates pre-filtered)."""
    from nuscenes.utils.geometry_utils import points_in_box

    out = np.zeros(len(xyz), dtype=bool)
    for box in boxes:
        r = 0.5 * float(np.linalg.norm(box.wlh)) + 0.01
        d = xyz - box.center
        idx = np.flatnonzero(np.einsum("ij,ij->i", d, d) <= r * r)
        if len(idx):
            out[idx[points_in_box(box, xyz[idx].T)]] = True
    return out


def _median(values) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def summarize(dataroot: str | os.PathLike, version: str = "v1.0-mini", nusc=None,
              radar_clutter: bool = True) -> dict:
    """Figures of a nuScenes-format dataset, measured with the devkit.

    Returns a dict:
      scenes, samples, sample_annotation, instances: counts
      sample_data: {channel: {"records", "keyframes", "files"}}
      rates_hz: {channel: median over scenes of (n - 1) / (t_last - t_first)}, plus "keyframes"
      boxes_per_class: detection class -> boxes (devkit mapping; unmapped categories left out)
      boxes_per_category, attributes ("" = none), visibility (level -> boxes)
      lidar_points_median: median points per keyframe LIDAR_TOP sweep (files present)
      radar_returns_median: median returns per keyframe radar sweep, all filters disabled
      radar_clutter_share: share of those returns outside every annotated box (if radar_clutter)
      share_lidar_lt5, share_lidar_0, share_no_radar, share_visibility_0_40: shares of boxes
    """
    from nuscenes.eval.detection.utils import category_to_detection_name

    if nusc is None:
        from nuscenes.nuscenes import NuScenes

        nusc = NuScenes(version=version, dataroot=os.fspath(dataroot), verbose=False)
    root = nusc.dataroot
    sample_scene = {s["token"]: s["scene_token"] for s in nusc.sample}

    per_channel = defaultdict(lambda: {"records": 0, "keyframes": 0, "files": 0})
    times = defaultdict(list)             # (channel, scene) -> timestamps
    lidar_points, radar_returns = [], []
    radar_total = radar_clutter_n = 0
    for sd in nusc.sample_data:
        ch = sd["channel"]
        rec = per_channel[ch]
        rec["records"] += 1
        rec["keyframes"] += int(sd["is_key_frame"])
        path = os.path.join(root, sd["filename"])
        exists = os.path.exists(path)
        rec["files"] += int(exists)
        times[(ch, sample_scene[sd["sample_token"]])].append(sd["timestamp"])
        if not (exists and sd["is_key_frame"]):
            continue
        if sd["sensor_modality"] == "lidar":
            # .pcd.bin: 5 float32 per point, no header: the size gives the count.
            lidar_points.append(os.path.getsize(path) // 20)
        elif sd["sensor_modality"] == "radar":
            xyz = _radar_xyz(path)
            radar_returns.append(len(xyz))
            if radar_clutter and len(xyz):
                _, boxes, _ = nusc.get_sample_data(sd["token"])
                radar_total += len(xyz)
                radar_clutter_n += int(np.sum(~_inside_any(xyz, boxes)))

    rates: dict[str, float] = {}
    by_channel = defaultdict(list)
    for (ch, _scene), ts in times.items():
        if len(ts) > 1:
            ts = np.sort(np.asarray(ts, dtype=np.int64))
            by_channel[ch].append((len(ts) - 1) / ((ts[-1] - ts[0]) * 1e-6))
    for ch in sorted(by_channel):
        rates[ch] = _median(by_channel[ch])
    kf_rates = []
    for scene in nusc.scene:
        ts = np.sort([s["timestamp"] for s in nusc.sample if s["scene_token"] == scene["token"]])
        if len(ts) > 1:
            kf_rates.append((len(ts) - 1) / ((ts[-1] - ts[0]) * 1e-6))
    rates["keyframes"] = _median(kf_rates)

    anns = nusc.sample_annotation
    attr_name = {a["token"]: a["name"] for a in nusc.attribute}
    vis_level = {v["token"]: v["level"] for v in nusc.visibility}
    per_class, per_cat, attrs, vis = Counter(), Counter(), Counter(), Counter()
    for a in anns:
        per_cat[a["category_name"]] += 1
        det = category_to_detection_name(a["category_name"])
        if det is not None:
            per_class[det] += 1
        attrs[",".join(attr_name[t] for t in a["attribute_tokens"])] += 1
        vis[vis_level.get(a["visibility_token"], a["visibility_token"])] += 1
    n = max(len(anns), 1)
    lid = np.array([a["num_lidar_pts"] for a in anns], dtype=np.int64)
    rad = np.array([a["num_radar_pts"] for a in anns], dtype=np.int64)
    v1 = [v["token"] for v in nusc.visibility if v["level"] == "v0-40"]
    return {
        "dataroot": os.fspath(root), "version": nusc.version,
        "scenes": len(nusc.scene), "samples": len(nusc.sample),
        "sample_annotation": len(anns), "instances": len(nusc.instance),
        "sample_data": {ch: dict(v) for ch, v in sorted(per_channel.items())},
        "rates_hz": rates,
        "boxes_per_class": dict(sorted(per_class.items())),
        "boxes_per_category": dict(sorted(per_cat.items())),
        "attributes": dict(sorted(attrs.items())),
        "visibility": dict(sorted(vis.items())),
        "lidar_points_median": _median(lidar_points),
        "radar_returns_median": _median(radar_returns),
        "radar_clutter_share": (radar_clutter_n / radar_total) if radar_total else float("nan"),
        "share_lidar_lt5": float(np.sum(lid < 5)) / n,
        "share_lidar_0": float(np.sum(lid == 0)) / n,
        "share_no_radar": float(np.sum(rad == 0)) / n,
        "share_visibility_0_40": float(sum(a["visibility_token"] in v1 for a in anns)) / n,
    }


def format_summary(d: dict) -> str:
    """A readable multi-line table of a ``summarize`` result."""
    lines = [f"dataset {d['dataroot']} ({d['version']})",
             f"  scenes {d['scenes']}, samples {d['samples']}, annotations {d['sample_annotation']}, "
             f"instances {d['instances']}",
             "  channel              records  keyframes    files   rate (Hz)"]
    for ch, v in d["sample_data"].items():
        rate = d["rates_hz"].get(ch, float("nan"))
        lines.append(f"  {ch:<18} {v['records']:>9} {v['keyframes']:>10} {v['files']:>8} {rate:>11.2f}")
    lines.append(f"  {'keyframes (samples)':<18} {'':>9} {'':>10} {'':>8} {d['rates_hz']['keyframes']:>11.2f}")
    lines += [
        f"  LiDAR points per keyframe sweep (median)   {d['lidar_points_median']:>10.0f}",
        f"  radar returns per keyframe sweep (median)  {d['radar_returns_median']:>10.0f}",
        f"  radar returns outside every box (clutter)  {100 * d['radar_clutter_share']:>9.1f}%",
        f"  boxes with < 5 LiDAR points                {100 * d['share_lidar_lt5']:>9.1f}%",
        f"  boxes with 0 LiDAR points                  {100 * d['share_lidar_0']:>9.1f}%",
        f"  boxes with no radar point                  {100 * d['share_no_radar']:>9.1f}%",
        f"  boxes at visibility 0-40%                  {100 * d['share_visibility_0_40']:>9.1f}%",
        "  boxes per detection class: " + ", ".join(f"{k} {v}" for k, v in d["boxes_per_class"].items()),
        "  boxes per category: " + ", ".join(f"{k} {v}" for k, v in d["boxes_per_category"].items()),
        "  attributes: " + ", ".join(f"{k or '(none)'} {v}" for k, v in d["attributes"].items()),
        "  visibility: " + ", ".join(f"{k} {v}" for k, v in d["visibility"].items()),
    ]
    return "\n".join(lines)
