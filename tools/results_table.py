"""Markdown tables of the synthetic results (docs/results.md) from the metrics_summary.json files
that tools/eval_synthetic.sh writes, plus the detector issue's targets checked on them.

    python tools/results_table.py outputs/results
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = (  # (run folder, model, sensors at test time)
    ("fusion", "fusion", "camera, lidar, radar"),
    ("camera_lidar", "camera_lidar", "camera, lidar"),
    ("lidar", "lidar", "lidar"),
    ("camera_radar", "camera_radar", "camera, radar"),
    ("camera", "camera", "camera"),
    ("fusion_no_lidar", "fusion", "camera, radar (LiDAR missing)"),
    ("fusion_no_camera", "fusion", "lidar, radar (cameras missing)"),
)
ERRORS = ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")
CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle",
           "bicycle", "traffic_cone", "barrier")   # the devkit order


def load(folder: Path) -> dict[str, dict]:
    out = {}
    for run, _, _ in ROWS:
        path = folder / run / "metrics_summary.json"
        if path.exists():
            out[run] = json.loads(path.read_text())
    return out


def table(runs: dict[str, dict]) -> str:
    head = ("| model | sensors at test time | mAP | NDS | mATE | mASE | mAOE | mAVE | mAAE | "
            + " | ".join(f"{c} AP" for c in CLASSES) + " |")
    lines = [head, "|" + "---|" * (9 + len(CLASSES))]
    for run, model, sensors in ROWS:
        if run not in runs:
            continue
        m = runs[run]
        errs = " | ".join(f"{m['tp_errors'][e]:.3f}" for e in ERRORS)
        aps = " | ".join(f"{m['mean_dist_aps'][c]:.3f}" for c in CLASSES)
        lines.append(f"| {model} | {sensors} | {m['mean_ap']:.3f} | {m['nd_score']:.3f} | "
                     f"{errs} | {aps} |")
    return "\n".join(lines)


def targets(runs: dict[str, dict]) -> str:
    need = ("fusion", "camera_lidar", "lidar", "camera_radar", "camera", "fusion_no_lidar",
            "fusion_no_camera")
    if any(r not in runs for r in need):
        return "(targets: not every run is present)"
    nds = {r: runs[r]["nd_score"] for r in need}
    best_base = max(nds[r] for r in ("camera_lidar", "lidar", "camera_radar", "camera"))
    checks = [
        ("fusion NDS >= 0.5", nds["fusion"] >= 0.5, f"{nds['fusion']:.3f}"),
        ("fusion NDS above every baseline", nds["fusion"] > best_base,
         f"{nds['fusion']:.3f} vs best baseline {best_base:.3f}"),
        ("mAVE camera+LiDAR+radar < camera+LiDAR",
         runs["fusion"]["tp_errors"]["vel_err"] < runs["camera_lidar"]["tp_errors"]["vel_err"],
         f"{runs['fusion']['tp_errors']['vel_err']:.3f} vs "
         f"{runs['camera_lidar']['tp_errors']['vel_err']:.3f}"),
        ("LiDAR missing: within 0.03 NDS of camera_radar",
         nds["fusion_no_lidar"] >= nds["camera_radar"] - 0.03,
         f"{nds['fusion_no_lidar']:.3f} vs {nds['camera_radar']:.3f}"),
        ("cameras missing: within 0.02 NDS of lidar",
         nds["fusion_no_camera"] >= nds["lidar"] - 0.02,
         f"{nds['fusion_no_camera']:.3f} vs {nds['lidar']:.3f}"),
    ]
    return "\n".join(f"- {'met' if ok else 'NOT met'}: {what} ({detail})"
                     for what, ok, detail in checks)


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "outputs/results")
    sets = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not sets:
        print(f"no result sets under {root}", file=sys.stderr)
        return 1
    for folder in sets:
        runs = load(folder)
        print(f"## {folder.name}\n\n{table(runs)}\n\n{targets(runs)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
