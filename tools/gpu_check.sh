#!/usr/bin/env bash
# One run on the lent GPU machine: the GPU benchmark and the CUDA tests, results in $OUT.
#   here, first:  bash tools/gpu_deps.sh
#   device tool:  run(command="bash tools/gpu_check.sh", carry=[".gpu"], timeout_s=500)
# Steps, each under its own time limit, cheapest and most wanted first, so that a run stopped at
# its limit keeps what came before (the bench rewrites its JSON after every entry):
#   ops_bench   perception bench --only voxelize,bev_pool,nms    -> ops_bench.log/.json
#   cuda_tests  pytest -m cuda tests/ops (the kernels against their references)
#                                                                -> cuda_tests.log/.xml
#   model_tests pytest -m cuda tests/models: the spconv-triton backbone against a dense
#               reference, the GroupNorm's reduction, a training step in float16 with the
#               gradient scaler                                  -> model_tests.log
#   e2e_bench   perception bench --only end_to_end (both configs, fp16; the first call pays
#               Triton's compiling and autotuning)               -> e2e_bench.log/.json
#   syncs       tools/gpu_profile.py syncs: where one nuScenes-scale frame makes the host wait
#               for the GPU, by Python line                      -> syncs.log/.json
#   profile     tools/gpu_profile.py e2e and voxelize: torch.profiler tables
#                                                                -> profile_e2e.log/.json,
#                                                                   profile_vox.log/.json
# $OUT/env.txt: machine, versions, each step's exit status and seconds; the .log and .xml files
# end up in $OUT/logs.tgz (the device tool returns at most 8 files). A failed step is
# reported and the next one runs. DEVICE=cpu, OPS=..., E2E=0 and PROFILE=0 rehearse it on a CPU
# machine.
set -uo pipefail
: "${OUT:?set OUT to the results folder}"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
OPS=${OPS:-voxelize,bev_pool,nms}
E2E=${E2E:-1}
PROFILE=${PROFILE:-1}
[ -d .gpu/deps ] && [ -d .gpu/frames ] || { echo "no .gpu/: run tools/gpu_deps.sh first" >&2; exit 2; }
DEPS="$PWD/.gpu/deps"
"$PY" -c 'import pytest, yaml' 2>/dev/null || DEPS="$DEPS:$PWD/.gpu/pytest"
export PYTHONPATH="$PWD:$DEPS${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    echo "PYTHONPATH=$PYTHONPATH"
    "$PY" -c '
import importlib, sys
print("python", sys.version.split()[0])
for m in ("torch", "triton", "numpy", "cv2", "yaml", "pytest", "spconv", "spconv_triton", "nuscenes"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "__file__", ""))
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
[ -n "$OPS" ] && step ops_bench "${OPS_LIMIT:-90}" "$PY" -m perception bench --device "$DEVICE" \
    --only "$OPS" --json "$OUT/ops_bench.json"
step cuda_tests "${TEST_LIMIT:-90}" "$PY" -m pytest -m cuda tests/ops -v -rs \
    -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml"
step model_tests "${MODEL_LIMIT:-150}" "$PY" -m pytest -m cuda tests/models -v -rs \
    -p no:cacheprovider
[ "$E2E" = 1 ] && step e2e_bench "${E2E_LIMIT:-200}" "$PY" -m perception bench \
    --device "$DEVICE" --only end_to_end --frames .gpu/frames --repeats 30 \
    --json "$OUT/e2e_bench.json"
NUS="configs/nuscenes/fusion.yaml .gpu/frames/nuscenes.pt"
if [ "$PROFILE" = 1 ]; then
    step syncs "${SYNCS_LIMIT:-120}" "$PY" tools/gpu_profile.py syncs $NUS --device "$DEVICE" \
        --json "$OUT/syncs.json"
    step profile_e2e "${PROFILE_LIMIT:-120}" "$PY" tools/gpu_profile.py e2e $NUS \
        --device "$DEVICE" --json "$OUT/profile_e2e.json"
    step profile_vox "${PROFILE_LIMIT:-120}" "$PY" tools/gpu_profile.py voxelize \
        --device "$DEVICE" --json "$OUT/profile_vox.json"
fi
cat "$OUT/env.txt"
for f in ops_bench cuda_tests model_tests e2e_bench syncs profile_e2e profile_vox; do
    [ -f "$OUT/$f.log" ] && { echo "== $f"; tail -n 25 "$OUT/$f.log"; }
done
# The device tool brings back at most 8 files: the logs and the JUnit file travel as one archive.
(cd "$OUT" && tar czf logs.tgz ./*.log ./*.xml 2>/dev/null && rm -f ./*.log ./*.xml)
ls "$OUT"
exit 0
