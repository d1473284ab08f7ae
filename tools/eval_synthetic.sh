#!/usr/bin/env bash
# Evaluate the five shipped synthetic models (docs/results.md) and print the tables.
#
#   bash tools/eval_synthetic.sh [CKPT_DIR] [OUT_ROOT]
#
# CKPT_DIR (default data/checkpoints) holds synthetic_{fusion,lidar,camera,camera_radar,camera_lidar}.pt.
# Two sets:
#   mini_val of the training world (data/synthetic/demo, `perception synth --out data/synthetic/demo`,
#     seed 0): 2 scenes, 80 samples; each model with its own sensors, and the fusion model with
#     a sensor missing (camera,radar: no LiDAR; lidar,radar: no cameras);
#   make demo's val set (data/synthetic/demo_val, seed 1000, one scene, 40 samples, a world no
#     model trained on).
# Each run writes OUT_ROOT/<set>/<name>/metrics_summary.json (the devkit's format, fast backend:
# identical numbers); the tables come from tools/results_table.py.
set -euo pipefail
CK=${1:-data/checkpoints}
OUT=${2:-outputs/results}
PERCEPTION=${PERCEPTION:-.venv/bin/perception}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-2}

run() {   # set dataroot name config modalities
    local set=$1 root=$2 name=$3 cfg=$4 mods=$5
    local dir="$OUT/$set/$name"
    if [ -f "$dir/metrics_summary.json" ]; then return; fi
    "$PERCEPTION" eval "configs/synthetic/$cfg.yaml" --checkpoint "$CK/synthetic_$cfg.pt" \
        --dataroot "$root" --version v1.0-mini --split mini_val --out "$dir" \
        --modalities "$mods" --workers 1 --threads "$THREADS" > "$dir.log" 2>&1 \
        || { echo "eval $set/$name failed: see $dir.log" >&2; return 1; }
}

[ -d data/synthetic/demo_val ] || "$PERCEPTION" synth --out data/synthetic/demo_val \
    --version v1.0-mini --scenes 1 --seed 1000 --reuse
for set in train_world:data/synthetic/demo demo_val:data/synthetic/demo_val; do
    s=${set%%:*}; root=${set#*:}
    mkdir -p "$OUT/$s"
    run "$s" "$root" fusion fusion camera,lidar,radar
    run "$s" "$root" fusion_no_lidar fusion camera,radar
    run "$s" "$root" fusion_no_camera fusion lidar,radar
    run "$s" "$root" camera_lidar camera_lidar camera,lidar
    run "$s" "$root" camera_radar camera_radar camera,radar
    run "$s" "$root" lidar lidar lidar
    run "$s" "$root" camera camera camera
done
"$PY" tools/results_table.py "$OUT"
