# lgms-edge: the two commands are `make demo` and `make test`.
# Everything else is for device engineers and CI.

CARGO  ?= cargo
PYTHON ?= python3

# The Rust binary the Python side runs for phantom frames (lgms_models.phantom
# reads the same variable); built once if missing.
LGMS_EDGE_BIN ?= $(CURDIR)/target/release/lgms-edge
export LGMS_EDGE_BIN

# Python lint: ruff at the version requirements-dev.txt pins.
RUFF_VERSION := $(shell sed -n 's/^ruff==//p' requirements-dev.txt)

.PHONY: demo docs-overlay test test-rust test-python lint deps-python deps-lint deps-ci ci bench bench-1080p bench-peers fuzz soak help

help:
	@echo "make demo         run the pipeline on the phantom source + bundled model (writes out/)"
	@echo "make test         Rust tests + Python model tests (installs requirements*.txt if missing)"
	@echo "make docs-overlay the README's screenshot (docs/overlay.png) from a calibrated phantom run"
	@echo "make lint         cargo fmt --check + clippy -D warnings + ruff check + ruff format --check"
	@echo "make test-vm      V4L2/fbdev/DRM tests against real kernel drivers in qemu"
	@echo "make aarch64      release binary for the boards; make test-aarch64 runs the tests under qemu-user"
	@echo "make cross-aarch64  the same through cross in a container (glibc 2.31; make cross-image first)"
	@echo "make bench        per-stage latency on this machine (lgms-edge bench)"
	@echo "make bench-1080p  the same with a 1920x1080 NV12 camera: conversion, preprocessing, compositing at cart size"
	@echo "make bench-peers  the same model through lgms-edge, ONNX Runtime and PyTorch, 1 and 2 threads"
	@echo "make fuzz         the mutation fuzzing of tests/fuzz.rs, FUZZ_SCALE (40) times the cases make test runs"
	@echo "make soak         SOAK_FRAMES (100000) frames, resident memory must stay flat"
	@echo "make model CKPT=… / make train-phantom / make deploy BOARD=rpi5 HOST=user@cart"

demo:
	$(CARGO) run --release -- demo

# The README's screenshot: the last frame of a short calibrated phantom run.
docs-overlay: $(LGMS_EDGE_BIN)
	rm -rf out/overlay
	$(LGMS_EDGE_BIN) run -c docs/overlay.toml
	cp "$$(ls out/overlay/*.png | tail -n 1)" docs/overlay.png

test: deps-python test-rust test-python

# --release: the tests share the release build's compiled tract with
# `make demo`/`make bench` (one tract build instead of two) and the
# network tests run several times faster.
test-rust:
	$(CARGO) test --release --locked

# The phantom frames come from the release binary (`make test` has just
# built it in test-rust).
test-python: $(LGMS_EDGE_BIN)
	$(PYTHON) -m pytest -q tests/python

$(LGMS_EDGE_BIN):
	$(CARGO) build --release --locked
	@test -x "$@" || { echo "LGMS_EDGE_BIN=$@ does not exist after cargo build; fix: unset it or point it at the lgms-edge binary" >&2; exit 1; }

# The pinned Python packages (requirements.txt: runtime, torch is large;
# requirements-dev.txt: pytest, ruff), installed only when one is missing or
# at another version than its pin.
PY_REQUIREMENTS = requirements.txt requirements-dev.txt
deps-python:
	@$(PYTHON) -c 'import sys, importlib.metadata as md; \
		pins = [l.split("#")[0].strip().split("==") for f in sys.argv[1:] for l in open(f)]; \
		sys.exit(any(md.version(p[0]).split("+")[0] != p[1] for p in pins if len(p) == 2))' \
		$(PY_REQUIREMENTS) 2>/dev/null || \
		$(PYTHON) -m pip install -q $(addprefix -r ,$(PY_REQUIREMENTS))

deps-lint:
	@$(PYTHON) -m ruff --version 2>/dev/null | grep -qx "ruff $(RUFF_VERSION)" || \
		$(PYTHON) -m pip install -q -r requirements-dev.txt

lint: deps-lint
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(PYTHON) -m ruff check
	$(PYTHON) -m ruff format --check

bench:
	$(CARGO) run --release -- bench --config boards/x86-dev.toml

# The pixel path at a cart's capture size: a 1920x1080 NV12 phantom camera
# (capture = the conversion), the ROI's preprocessing and the compositing.
bench-1080p:
	$(CARGO) run --release -- bench --config boards/bench-1080p.toml --frames 30

# The speed yardstick: medians and ratios, side by side in one run
# (writes out/bench-peers.json). PEERS_ARGS e.g. "--threads 1 --runs 5".
PEERS_ARGS ?=
bench-peers: deps-python
	$(CARGO) build --release --locked
	$(PYTHON) -m lgms_models.bench_peers --stock $(PEERS_ARGS)

# Mutation fuzzing of the file readers, configs and model metadata:
# `make test` runs each target's default number of cases (500 Y4M, 500
# image-folder, 500 MJPEG, 200 raw, 200 config, 100 metadata); this runs
# FUZZ_SCALE times as many.
FUZZ_SCALE ?= 40
fuzz:
	LGMS_FUZZ_SCALE=$(FUZZ_SCALE) $(CARGO) test --release --locked --test fuzz

# A long lossless run of the tiny model; RSS must stay within
# SOAK_MAX_GROWTH_KB after the first tenth (CI runs a shorter one).
SOAK_FRAMES ?= 100000
SOAK_MAX_GROWTH_KB ?= 1024
soak: $(LGMS_EDGE_BIN)
	tests/soak/soak.sh $(SOAK_FRAMES) $(SOAK_MAX_GROWTH_KB)

include models/model.mk
include tests/vm/vm.mk
include cross/aarch64.mk
