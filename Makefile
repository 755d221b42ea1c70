# edgeopt: `make export` runs the default pipeline end to end; `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIPELINE ?= pipelines/fashion_mnist.yaml

.PHONY: install data export test test-slow bench search-bench arch-table calibrate lint clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes, so repeated `make` calls are quick.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Finds Fashion-MNIST, or installs Debian's dataset-fashion-mnist (as root), or tries Keras' download.
data: install
	$(BIN)/edgeopt data fashion_mnist --fetch

# Trains the reference teacher when models/fashion_mnist_teacher.keras is missing, runs the pipeline
# (reusing cached stages in build/) and writes the release bundle to dist/<pipeline>/.
export: install data
	$(BIN)/edgeopt export $(PIPELINE)

test: install data
	$(BIN)/python -m pytest

test-slow: install data
	$(BIN)/python -m pytest -m slow

# The default pipeline side by side with int8 PTQ and the tfmot tutorial; writes bench/results.{md,json}.
bench: install data
	$(BIN)/python -m benchmarks.compression pipelines/fashion_mnist.yaml --out bench

# Not part of `make test` (about an hour on 2 cores): the search against the hand-tuned default pipeline on
# Fashion-MNIST, and against the fixed recipe on digits. Writes bench/search/results.{md,json} and Pareto plots.
search-bench: install data
	$(BIN)/python -m benchmarks.search_bench --out bench/search

# Not part of `make test`: Keras 3 MobileNetV2/V3, EfficientNetB0 and the MLPerf Tiny reference models
# converted to int8 and validated in strict mode on pixel4-cpu4 and cortex-m7-512k.
arch-table: install
	$(BIN)/python -m benchmarks.archtable --out bench/architectures

# Measures MobileNet 1.0 224 here and stores host-to-device latency factors for the phone profiles.
calibrate: install
	$(BIN)/edgeopt calibrate

lint: install
	$(BIN)/ruff check edgeopt benchmarks tests
	$(BIN)/ruff format --check edgeopt benchmarks tests

clean:
	rm -rf build dist .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
