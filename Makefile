# robopref: `make demo` sets up and runs a small end-to-end job, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
# CPU build of torch (this pin resolves from local disk on robopref's dev machines).
# GPU users: `make setup TORCH_SPEC=torch` (or any CUDA build) — see README.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robopref-installed

.PHONY: setup system-deps demo test test-slow lint lint-imports clean

# Debian packages: OSMesa lets MuJoCo render offscreen on a CPU (pixel observations, RAPL,
# GRAPE); Chromium + its driver run the labelling page's browser test.
SYSTEM_PACKAGES := libosmesa6 chromium chromium-driver
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "robopref: apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "robopref: please install$$missing (rendering and browser tests need them)"; fi; fi

$(STAMP): pyproject.toml
	$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	# robomimic for the SequenceDataset test of our robomimic export; --no-deps: its declared
	# dependencies pull a PyPI torchvision that does not import beside the CPU torch above
	$(PY) -m pip install -q --no-deps robomimic==0.3.0 six termcolor
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	MUJOCO_GL=$${MUJOCO_GL:-osmesa} $(VENV)/bin/robopref demo

# lint-imports checks the rooms' import rules ([tool.importlinter] in pyproject.toml)
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: setup
	$(PY) -m pytest -q -m slow

lint-imports: setup
	$(VENV)/bin/lint-imports --no-cache

lint: setup
	$(VENV)/bin/ruff check robopref tests benchmarks
	$(VENV)/bin/ruff format --check robopref tests benchmarks

clean:
	rm -rf $(VENV) runs
