#!/usr/bin/env bash
# Prepare, on this machine, what the lent GPU machine lacks, in .gpu/ (git-ignored; the device
# tool carries it: run(..., carry=[".gpu"])). docs/ENVIRONMENT: that machine has torch, triton,
# numpy and opencv-headless, no internet, no spconv, no nuScenes devkit.
#   .gpu/deps/    spconv-triton (the LiDAR backbone's CUDA path where no spconv wheel fits),
#                 unpacked from its pure-Python wheel
#   .gpu/pytest/  pytest and what it needs, PyYAML (its pure-Python half works on any Python 3):
#                 gpu_check.sh uses them only where the machine has no pytest or PyYAML of its
#                 own (the H200 image has both, with plugins installed for its own pytest)
#   .gpu/frames/  the end_to_end benchmark's input frames (`perception bench --save-frames`):
#                 loading them from a dataset needs the devkit
# Then: tools/gpu_check.sh on the device. ~23 MB.
set -euo pipefail
PY=${PY:-.venv/bin/python}
rm -rf .gpu
mkdir -p .gpu/wheels .gpu/deps .gpu/pytest
# Versions as installed here (pytest's own needs, plus the two it needs on Python 3.10 only).
for p in pytest pluggy iniconfig packaging pygments pyyaml spconv-triton; do
    v=$("$PY" -c "import importlib.metadata as m; print(m.version('$p'))")
    "$PY" -m pip download -q --no-deps --disable-pip-version-check -d .gpu/wheels "$p==$v"
done
"$PY" -m pip download -q --no-deps --disable-pip-version-check -d .gpu/wheels \
    --platform any --only-binary=:all: "exceptiongroup>=1" "tomli>=2"
for w in .gpu/wheels/*.whl; do
    case "$(basename "$w")" in
        spconv_triton-*) "$PY" -m zipfile -e "$w" .gpu/deps ;;
        *) "$PY" -m zipfile -e "$w" .gpu/pytest ;;
    esac
done
rm -rf .gpu/wheels
"$PY" -m perception bench --save-frames .gpu/frames
du -sh .gpu
