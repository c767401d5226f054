# Two commands do all set-up: `make run` starts the app, `make test` runs the tests.
# Each installs what it needs (venv, pip packages, and Debian packages when root with apt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8501
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: run test bench deps-run deps-test clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# Debian packages: the built-in dataset (and Chromium for browser tests). Only as root with apt;
# otherwise the app falls back to data/ or a torchvision download.
deps-run:
	@if [ ! -f $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; fi

deps-test: deps-run
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi

run: deps-run $(VENV)/.installed
	$(VENV)/bin/streamlit run server.py --server.address $(HOST) --server.port $(PORT)

test: deps-test $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(PY) bench/accuracy.py

clean:
	rm -rf $(VENV) .pytest_cache
