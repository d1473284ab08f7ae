#!/usr/bin/env bash
# Train the five shipped synthetic models (fusion + the four baselines) by one recipe and budget,
# two at a time (one thread each, longest first), then export each to fp16 for data/checkpoints.
#
#   bash tools/train_synthetic.sh [ITERS] [LR] [WORK_ROOT]
#
# Defaults: 1600 iterations, lr 1.5e-3, work_dirs/synthetic. MODELS (default: all five, longest
# first) picks which to train, JOBS (default 2) how many run at once, SEED (default 0, the
# shipped models') the training seed (initialisation, data order, augmentation, dropout) and
# BF16=1 trains in bfloat16 autocast (`train.cpu_bf16`: ~1.5x faster on CPUs with native
# bfloat16; docs/training.md, "bfloat16 on CPU"). THREADS (default 1) is each run's torch threads:
# 2 suits one run alone on a 2-core machine (JOBS=1).
# Data: the default synthetic world (`perception synth --out data/synthetic/demo`, seed 0), its
# mini_train split; DATA and VERSION pick another world (VERSION=v1.0-trainval trains on its
# `train` split, e.g. a larger world from `perception synth --version v1.0-trainval --scenes
# 40`). CONFIGS (default configs/synthetic) reads the five configs from another folder, to try
# a recipe change on the whole set before it goes into configs/. Every run is resumable: running
# the script again continues each model from its latest.pt.
# FIRST=DIR makes the run a second phase (the shipped set's: docs/results.md, "The recipe"):
# each model starts from the first phase's exported files in DIR (`train.init_from` with
# `train.init_partial`, docs/training.md), the models with LiDAR (fusion, camera_lidar, lidar)
# from DIR/synthetic_lidar.pt, the others from their own DIR/synthetic_NAME.pt; their camera
# and radar encoders start fresh where the file has none.
# docs/results.md has the measured metrics of the shipped models and the commands to evaluate them.
set -euo pipefail
ITERS=${1:-1600}
LR=${2:-1.5e-3}
ROOT=${3:-work_dirs/synthetic}
DATA=${DATA:-data/synthetic/demo}
VERSION=${VERSION:-v1.0-mini}
case "$VERSION" in
    v1.0-mini) SPLIT=mini_train ;;
    v1.0-trainval) SPLIT=train ;;
    *) echo "VERSION must be v1.0-mini or v1.0-trainval, got '$VERSION'" >&2; exit 2 ;;
esac
PERCEPTION=${PERCEPTION:-.venv/bin/perception}
CONFIGS=${CONFIGS:-configs/synthetic}
MODELS=${MODELS:-fusion camera_lidar lidar camera_radar camera}
JOBS=${JOBS:-2}
SEED=${SEED:-0}
BF16=${BF16:-0}
THREADS=${THREADS:-1}
FIRST=${FIRST:-}
mkdir -p "$ROOT"

train_one() {
    local name=$1 dir="$ROOT/$1" resume="" init=()
    [ -f "$dir/latest.pt" ] && resume="--resume"
    if [ -n "$FIRST" ]; then
        local from="$FIRST/synthetic_$name.pt"
        case "$name" in fusion|camera_lidar|lidar) from="$FIRST/synthetic_lidar.pt" ;; esac
        [ -f "$from" ] || { echo "$name: first-phase file $from not found (FIRST=$FIRST)" >&2; return 1; }
        init=(--set train.init_from="$from" --set train.init_partial=true)
    fi
    "$PERCEPTION" train "$CONFIGS/$name.yaml" --work-dir "$dir" --dataroot "$DATA" \
        --version "$VERSION" --threads "$THREADS" $resume --set data.train_split="$SPLIT" \
        --set train.max_iters="$ITERS" --set train.lr="$LR" --set train.seed="$SEED" \
        --set train.checkpoint_interval=250 \
        --set data.num_workers=1 --set train.cpu_bf16="$([ "$BF16" = 1 ] && echo true || echo false)" \
        "${init[@]}" >> "$ROOT/$name.log" 2>&1 || { echo "$name: training stopped, see $ROOT/$name.log" >&2; return 1; }
    "$PERCEPTION" export "$dir/latest.pt" --out "$ROOT/synthetic_$name.pt" >> "$ROOT/$name.log" 2>&1
    echo "$name: done ($(date -u +%H:%M:%S))"
}
export -f train_one
export ROOT DATA VERSION SPLIT PERCEPTION CONFIGS ITERS LR SEED BF16 THREADS FIRST

# The GT-paste database depends on the training split only: build it once, share it.
if [ -f "$ROOT/gt_database.pt" ]; then
    for n in $MODELS; do
        mkdir -p "$ROOT/$n"; [ -f "$ROOT/$n/gt_database.pt" ] || cp "$ROOT/gt_database.pt" "$ROOT/$n/"
    done
fi
printf '%s\n' $MODELS | xargs -P "$JOBS" -I{} bash -c 'train_one {}'
