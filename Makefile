# The two commands a newcomer runs:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: 2.13.0 (CPU) is what this project is tested with
	$(PY) -m pip install torch==2.13.0

setup: $(PY)
	$(PY) -m pip install -e ".[dev]"

demo: setup
	$(PY) examples/train_manifold.py

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests bench examples

bench: setup
	$(PY) bench/step_time.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
