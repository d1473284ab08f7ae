# Two commands from a clean clone:  `make demo`  and  `make test`.
# Both run `make setup` first: a .venv with the pinned dependencies (CPU torch) and this package.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done
DEMO_DATA ?= data/synthetic/demo_val
DEMO_OUT  ?= outputs/demo
DEMO_CKPT ?= data/checkpoints/synthetic_fusion.pt
DEMO_CONFIG ?= configs/synthetic/fusion.yaml
JOBS   ?= 2

.PHONY: setup demo test clean-demo

setup: $(STAMP)

$(STAMP): requirements.txt setup.py
	bash tools/setup_system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -c "import perception, torch, spconv, nuscenes, open3d, cv2"
	touch $(STAMP)

# The main job on built-in data: a small synthetic val set (one 20 s scene, 40 frames, a seed the
# shipped models never saw; reused when present), summarized with the devkit; the shipped fusion
# model over it with the nuScenes metrics table, a bird's-eye-view picture per frame (ground truth
# vs detections) in $(DEMO_OUT)/bev, and one sample with its six cameras in $(DEMO_OUT).
demo: setup
	$(VENV)/bin/perception synth --out $(DEMO_DATA) --version v1.0-mini --scenes 1 --seed 1000 --reuse
	$(VENV)/bin/perception info --dataroot $(DEMO_DATA) --version v1.0-mini
	$(VENV)/bin/perception eval $(DEMO_CONFIG) --checkpoint $(DEMO_CKPT) \
		--dataroot $(DEMO_DATA) --version v1.0-mini --split mini_val --out $(DEMO_OUT)/eval \
		--bev-dir $(DEMO_OUT)/bev
	$(VENV)/bin/perception render --dataroot $(DEMO_DATA) --version v1.0-mini --split mini_val --index 0 --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q -n $(JOBS) tests

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_OUT)
