# The two commands a newcomer runs:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data demo example test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: 2.13.0 (CPU) is what this project is tested with
	$(PY) -m pip install torch==2.13.0

setup: $(PY)
	$(PY) -m pip install -e ".[dev,hf,diffusion]"

# Fashion-MNIST from the Debian package (IDX files in $(DATA_DIR)), or DATA_DIR=... of your own
data:
	@if ls $(DATA_DIR)/train-images-idx3-ubyte* >/dev/null 2>&1; then \
		echo "Fashion-MNIST found in $(DATA_DIR)"; \
	elif [ "$(DATA_DIR)" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST IDX files not found in $(DATA_DIR); install the Debian package"; \
		echo "dataset-fashion-mnist or run: make demo DATA_DIR=/path/to/idx/files"; exit 1; \
	fi

demo: setup data
	$(VENV)/bin/weightmanifold demo --data-dir $(DATA_DIR)

example: setup
	$(PY) examples/train_manifold.py

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests bench examples

bench: setup
	$(PY) bench/step_time.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
