# Two commands from a clean clone:  `make demo`  and  `make test`.
# Both run `make setup` first: a .venv with the pinned dependencies (CPU torch) and this package.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done
DEMO_DATA ?= data/synthetic/demo
DEMO_OUT  ?= outputs/demo
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

# The main job on built-in data: generate the default synthetic world (reused when present),
# summarize it with the devkit, and render one sample (BEV + the 6 cameras) to $(DEMO_OUT).
demo: setup
	$(VENV)/bin/perception synth --out $(DEMO_DATA) --version v1.0-mini --seed 0 --reuse
	$(VENV)/bin/perception info --dataroot $(DEMO_DATA) --version v1.0-mini
	$(VENV)/bin/perception render --dataroot $(DEMO_DATA) --version v1.0-mini --split mini_val --index 0 --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q -n $(JOBS) tests

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_OUT)
