# Two commands: `make serve` (arrives with the Triton and shim issues) and `make test`.
# Both bootstrap .venv with the system Python: the Triton Python-backend stub links Debian's
# libpython3.11, so a venv from any other 3.11 build fails inside the stub (see docs).

SYSTEM_PYTHON ?= /usr/bin/python3
VENV          ?= .venv
PY            := $(VENV)/bin/python
# Where the local CPU wheel of torch lives; pip looks there as well as the registries.
WHEEL_DIR     ?= /opt/wheels
PIP_FLAGS     := --disable-pip-version-check --quiet $(if $(wildcard $(WHEEL_DIR)),--find-links $(WHEEL_DIR))
PYTEST_ARGS   ?=

.PHONY: venv test test-unit clean

venv: $(VENV)/.deps-installed

$(VENV)/bin/python:
	$(SYSTEM_PYTHON) -m venv $(VENV)

# Re-install only when the pins change.
$(VENV)/.deps-installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt
	touch $@

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/adapter_manager $(PYTEST_ARGS)

clean:
	rm -rf var .pytest_cache
