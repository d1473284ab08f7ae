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
#     model trained on);
# and with LARGE_VAL=DIR a third, larger one: the `val` split of a v1.0-trainval world (e.g.
#   `perception synth --out data/synthetic/train40 --version v1.0-trainval --scenes 40`: 7 val
#   scenes, 280 samples, names disjoint from the mini world's), set name large_val;
# and with UNSEEN_VAL=DIR another: the mini_val of a v1.0-mini world generated at a seed no model
#   trained on (e.g. `perception synth --out data/synthetic/seed2026 --version v1.0-mini --seed
#   2026`: 2 scenes, 80 samples), or the val split of a v1.0-trainval one (e.g. `perception synth
#   --out data/synthetic/val24 --version v1.0-trainval --scenes 24 --val-scenes 24 --seed 7`: 24
#   scenes, 960 samples), set name the folder's name.
# ROWS (default: all seven) picks rows by name: fusion fusion_no_lidar fusion_no_camera
# camera_lidar camera_radar lidar camera.
# CONFIGS=DIR (default configs/synthetic) takes each model's NAME.yaml from DIR instead (an
# experiment whose architecture differs from the shipped one's).
# A model whose file CKPT_DIR lacks is skipped (e.g. a fusion + LiDAR experiment); a row whose
# metrics_summary.json exists is not run again. Each run writes
# OUT_ROOT/<set>/<name>/metrics_summary.json (the devkit's format, fast backend: identical
# numbers); the tables come from tools/results_table.py.
set -euo pipefail
CK=${1:-data/checkpoints}
OUT=${2:-outputs/results}
PERCEPTION=${PERCEPTION:-.venv/bin/perception}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-2}
CONFIGS=${CONFIGS:-configs/synthetic}

run() {   # set dataroot version split name config modalities
    local set=$1 root=$2 version=$3 split=$4 name=$5 cfg=$6 mods=$7
    local dir="$OUT/$set/$name"
    if [ -f "$dir/metrics_summary.json" ]; then return; fi
    if [ ! -f "$CK/synthetic_$cfg.pt" ]; then echo "$set/$name: no $CK/synthetic_$cfg.pt, skipped" >&2; return; fi
    "$PERCEPTION" eval "$CONFIGS/$cfg.yaml" --checkpoint "$CK/synthetic_$cfg.pt" \
        --dataroot "$root" --version "$version" --split "$split" --out "$dir" \
        --modalities "$mods" --workers 1 --threads "$THREADS" > "$dir.log" 2>&1 \
        || { echo "eval $set/$name failed: see $dir.log" >&2; return 1; }
}

[ -d data/synthetic/demo_val ] || "$PERCEPTION" synth --out data/synthetic/demo_val \
    --version v1.0-mini --scenes 1 --seed 1000 --reuse
SETS="train_world:data/synthetic/demo:v1.0-mini:mini_val demo_val:data/synthetic/demo_val:v1.0-mini:mini_val"
if [ -n "${LARGE_VAL:-}" ]; then
    [ -d "$LARGE_VAL/v1.0-trainval" ] || { echo "LARGE_VAL=$LARGE_VAL holds no v1.0-trainval world" >&2; exit 2; }
    SETS="$SETS large_val:$LARGE_VAL:v1.0-trainval:val"
fi
if [ -n "${UNSEEN_VAL:-}" ]; then
    if [ -d "$UNSEEN_VAL/v1.0-mini" ]; then
        SETS="$SETS $(basename "$UNSEEN_VAL"):$UNSEEN_VAL:v1.0-mini:mini_val"
    elif [ -d "$UNSEEN_VAL/v1.0-trainval" ]; then
        SETS="$SETS $(basename "$UNSEEN_VAL"):$UNSEEN_VAL:v1.0-trainval:val"
    else
        echo "UNSEEN_VAL=$UNSEEN_VAL holds no v1.0-mini or v1.0-trainval world" >&2; exit 2
    fi
fi
for set in $SETS; do
    IFS=: read -r s root version split <<< "$set"
    mkdir -p "$OUT/$s"
    for row in fusion:fusion:camera,lidar,radar fusion_no_lidar:fusion:camera,radar \
               fusion_no_camera:fusion:lidar,radar camera_lidar:camera_lidar:camera,lidar \
               camera_radar:camera_radar:camera,radar lidar:lidar:lidar camera:camera:camera; do
        IFS=: read -r name cfg mods <<< "$row"
        case " ${ROWS:-$name} " in *" $name "*) ;; *) continue ;; esac
        run "$s" "$root" "$version" "$split" "$name" "$cfg" "$mods"
    done
done
"$PY" tools/results_table.py "$OUT"
