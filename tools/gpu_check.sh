#!/usr/bin/env bash
# One run on the lent GPU machine: the CUDA tests and the GPU benchmark, results in $OUT.
#   here, first:  bash tools/gpu_deps.sh
#   device tool:  run(command="bash tools/gpu_check.sh", carry=[".gpu"], timeout_s=480)
# Writes $OUT/env.txt (machine, versions, each step's exit status and seconds),
# cuda_tests.log + .xml, gpu_bench.log + .json. A failed step is reported and the next one runs.
# DEVICE=cpu and BENCH_ONLY=... rehearse it on a CPU machine.
set -uo pipefail
: "${OUT:?set OUT to the results folder}"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BENCH_ONLY=${BENCH_ONLY:-voxelize,bev_pool,nms,end_to_end}
[ -d .gpu/deps ] && [ -d .gpu/frames ] || { echo "no .gpu/: run tools/gpu_deps.sh first" >&2; exit 2; }
export PYTHONPATH="$PWD:$PWD/.gpu/deps${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    "$PY" -c '
import importlib, sys
print("python", sys.version.split()[0])
for m in ("torch", "triton", "numpy", "cv2", "yaml", "pytest", "spconv", "spconv_triton", "nuscenes"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:
        print(m, "missing:", type(e).__name__, e)
import torch
print("torch cuda", torch.version.cuda, torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
from perception.models.lidar.backbone import spconv_backend
print("LiDAR backbone:", spconv_backend())'
} > "$OUT/env.txt" 2>&1

step() {
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/env.txt"
}
step cuda_tests "${TEST_LIMIT:-240}" "$PY" -m pytest -m cuda tests/ops \
    tests/models/test_spconv_backends.py -q -rs -p no:cacheprovider \
    --junitxml="$OUT/cuda_tests.xml"
step gpu_bench "${BENCH_LIMIT:-300}" "$PY" -m perception bench --device "$DEVICE" \
    --only "$BENCH_ONLY" --frames .gpu/frames --json "$OUT/gpu_bench.json"
cat "$OUT/env.txt"
tail -n 25 "$OUT/cuda_tests.log"
tail -n 40 "$OUT/gpu_bench.log"
