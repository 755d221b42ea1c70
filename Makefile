# edgeopt: `make export` runs the default pipeline end to end; `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIPELINE ?= pipelines/fashion_mnist.yaml

.PHONY: install data firmware-deps export test test-slow bench bench-guest suite search-bench arch-table firmware-table calibrate arm-tools arm-root phone-fit lint clean

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

# The firmware check's tools (edgeopt firmware): Debian's Arm cross compiler with newlib and libstdc++, and
# QEMU's Arm system emulator. Installed as root where apt-get exists; elsewhere this says what to install
# and the firmware tests skip, saying why.
FIRMWARE_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm
firmware-deps:
	@if command -v arm-none-eabi-g++ >/dev/null && command -v qemu-system-arm >/dev/null \
	    && [ -f "$$(arm-none-eabi-gcc -print-file-name=nano.specs)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(FIRMWARE_PACKAGES)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(FIRMWARE_PACKAGES) >/dev/null \
	  || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(FIRMWARE_PACKAGES) >/dev/null; } \
	  || echo "firmware-deps: apt-get could not install $(FIRMWARE_PACKAGES); the firmware tests will skip"; \
	else echo "firmware-deps: install $(FIRMWARE_PACKAGES) (Debian names) for edgeopt firmware; the firmware tests skip without them"; fi

# Trains the reference teacher when models/fashion_mnist_teacher.keras is missing, runs the pipeline
# (reusing cached stages in build/) and writes the release bundle to dist/<pipeline>/.
export: install data
	$(BIN)/edgeopt export $(PIPELINE)

test: install data firmware-deps arm-tools
	$(BIN)/python -m pytest

test-slow: install data
	$(BIN)/python -m pytest -m slow

# The default pipeline side by side with int8 PTQ and the tfmot tutorial; writes bench/results.{md,json}.
bench: install data bench-guest
	$(BIN)/python -m benchmarks.compression pipelines/fashion_mnist.yaml --out bench

# Not part of `make test` (at most an hour on 2 cores): the default pipeline file on six model families
# (fashion_cnn, a Keras 3 MobileNet-style model, ResNet-8, DS-CNN, an MLP and a tiny CNN on digits), every
# teacher trained in the run, two seeds; writes bench/suite.{md,json}.
suite: install data bench-guest
	$(BIN)/python -m benchmarks.suite --out bench

# Not part of `make test` (about an hour on 2 cores): the search against the hand-tuned default pipeline on
# Fashion-MNIST, and against the fixed recipe on digits. Writes bench/search/results.{md,json} and Pareto plots.
search-bench: install data bench-guest
	$(BIN)/python -m benchmarks.search_bench --out bench/search

# Not part of `make test`: Keras 3 MobileNetV2/V3, EfficientNetB0 and the MLPerf Tiny reference models
# converted to int8 and validated in strict mode on pixel4-cpu4 and cortex-m7-512k.
arch-table: install
	$(BIN)/python -m benchmarks.archtable --out bench/architectures

# Not part of `make test`: the firmware check on the default bundle (Cortex-M4, M7; CMSIS-NN and reference
# kernels) and on MLPerf Tiny's reference architectures (M4, M33, M7), and the latency estimate against the
# published MLPerf Tiny CMSIS-NN results. Writes bench/firmware.{md,json}. The TFLite Micro tree is
# $$EDGEOPT_TFLM_SRC or ../shared/third_party/tflm/tflite-micro.
firmware-table: install firmware-deps export
	$(BIN)/python -m benchmarks.firmware_table --bundle dist/fashion_mnist --out bench

# Measures MobileNet 1.0 224 here and stores host-to-device latency factors for the phone profiles.
calibrate: install
	$(BIN)/edgeopt calibrate

# What the phone check needs from Debian: qemu-user (a qemu-aarch64 that loads TCG plugins), debootstrap, and gcc
# for the instruction-counting plugin. Installed as root where apt exists; elsewhere `edgeopt phone setup` names
# what is missing and the phone profiles' Arm gates are `not evaluated`, saying why.
ARM_TOOLS := qemu-user debootstrap gcc libc6-dev
arm-tools:
	@if command -v qemu-aarch64 >/dev/null && command -v debootstrap >/dev/null && command -v gcc >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends $(ARM_TOOLS) >/dev/null 2>&1 || \
	  { apt-get update -qq -o DPkg::Lock::Timeout=600 && apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends $(ARM_TOOLS); }; \
	else echo "arm-tools: $(ARM_TOOLS) missing and not installable here (needs root and apt); the phone check will say what is missing"; fi

# The phone check's arm64 guest (a Debian 12 arm64 root and LiteRT's aarch64 wheels), once per machine in
# ~/.cache/edgeopt/arm64 (EDGEOPT_ARM_CACHE); validate and the tests build it on first use too.
arm-root: install arm-tools
	$(BIN)/edgeopt phone setup

# The benchmarks build the phone check's guest before they time anything, so a new machine's strict releases
# do not fail for want of qemu-aarch64 and no pair's minutes pay for the build. Where it cannot be built here
# (no root, no apt) the message names what is missing and the benchmarks go on, the phone gates `not evaluated`.
bench-guest: install arm-tools
	-$(BIN)/edgeopt phone setup

# Not part of `make test` (about 15 minutes): counts MobileNet 1.0 224's instructions on each phone profile's core,
# refits the Arm-work latency estimate and writes bench/phone/{fit.md,fit.json,counts.json}; the counts become the
# shipped ones.
phone-fit: arm-root
	$(BIN)/edgeopt phone fit --measure --out bench/phone
	cp bench/phone/counts.json edgeopt/arm/mobilenet_counts.json

lint: install
	$(BIN)/ruff check edgeopt benchmarks tests
	$(BIN)/ruff format --check edgeopt benchmarks tests

clean:
	rm -rf build dist .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
