# aarch64 (board) builds and tests from an x86_64 Debian host.
# Included by the top-level Makefile; the host targets need the packages
# that cross/deps.sh installs (it installs nothing itself); the cross-*
# targets at the end need a container engine and cross instead.
#
#   make aarch64         release binary for aarch64-unknown-linux-gnu
#   make test-aarch64    the test suite under qemu-user (same build settings,
#                        so tract is compiled once for both)
#   make test-aarch64-kernels   the aarch64-specific part of it (CI runs it
#                        in the container on both cores:
#                        cross-test-aarch64-kernels-cpus)
#   make test-aarch64-kernels-cpus   the same on each board's core
#                        ($(AARCH64_TEST_CPUS)); QEMU_CPU=cortex-a72 picks
#                        one core for any test target
#   make aarch64-glibc   the glibc symbol versions the binary needs (objdump -T)
#   make deploy BOARD=rpi5 HOST=user@cart
#
# Linking: by default Debian's aarch64-linux-gnu-gcc, against bookworm's
# glibc: the binary needs GLIBC_2.34, fine on Raspberry Pi OS bookworm
# (2.36), not on JetPack 5 (Ubuntu 20.04, 2.31). AARCH64_LINK=zig links with
# zig against glibc $(AARCH64_GLIBC) instead, so one binary runs on every
# supported board (needs `cross/deps.sh`'s zig wheels). The two keep their
# compiled dependencies apart only by rebuilding: pick one per target dir.
#
# Debian's rustc-web ships the aarch64 standard library
# (libstd-rust-web-dev:arm64); rustup's toolchain, if first on PATH, has no
# aarch64 std here, so these targets name Debian's compiler explicitly.

AARCH64_TARGET  := aarch64-unknown-linux-gnu
AARCH64_RUSTC   ?= /usr/bin/rustc
AARCH64_CARGO   ?= /usr/bin/cargo
AARCH64_GLIBC   ?= 2.31
AARCH64_LINK    ?= gcc
AARCH64_DIR     := $(or $(CARGO_TARGET_DIR),target)/$(AARCH64_TARGET)
AARCH64_BIN     := $(AARCH64_DIR)/release/lgms-edge
AARCH64_RUSTDOC ?= /usr/bin/rustdoc
# RUSTDOC too: the doc tests are compiled for aarch64 as well.
AARCH64_ENV     := RUSTC=$(AARCH64_RUSTC) RUSTDOC=$(AARCH64_RUSTDOC) CARGO=$(AARCH64_CARGO)
# The core qemu-user emulates (its QEMU_CPU variable, the same as -cpu), so
# the tests see that core's features, as the kernel tables do on the board:
# unset, qemu's "max" has them all (dotprod, fp16, i8mm, ...), and the
# tables for a core without one would go untested. cortex-a72 is the
# Pi 4's core (NEON, no dotprod, no fp16 arithmetic), cortex-a76 the Pi 5's
# (dotprod, fp16).
QEMU_CPU          ?=
AARCH64_TEST_CPUS ?= cortex-a72 cortex-a76
# Network tests are slow under emulation (~40 s per full inference); the
# suite reads this to run one frame per network test.
# LGMS_TEST_RUNNER: the CLI tests spawn the aarch64 binary through qemu too.
QEMU_TEST_ENV   := LGMS_EMULATED=1 LGMS_TEST_RUNNER="qemu-aarch64-static -L /" $(if $(QEMU_CPU),QEMU_CPU=$(QEMU_CPU))

ifeq ($(AARCH64_LINK),zig)
AARCH64_BUILD   := $(AARCH64_ENV) cargo-zigbuild zigbuild --target $(AARCH64_TARGET).$(AARCH64_GLIBC)
AARCH64_TEST    := $(AARCH64_ENV) $(QEMU_TEST_ENV) cargo-zigbuild test --target $(AARCH64_TARGET).$(AARCH64_GLIBC)
AARCH64_MAX_GLIBC := $(AARCH64_GLIBC)
else
AARCH64_BUILD   := $(AARCH64_ENV) $(AARCH64_CARGO) build --target $(AARCH64_TARGET)
AARCH64_TEST    := $(AARCH64_ENV) $(QEMU_TEST_ENV) $(AARCH64_CARGO) test --target $(AARCH64_TARGET)
AARCH64_MAX_GLIBC := 2.36
endif

.PHONY: aarch64 test-aarch64 test-aarch64-kernels test-aarch64-kernels-cpus aarch64-glibc aarch64-glibc231-run deploy

aarch64:
	$(AARCH64_BUILD) --release --locked
	@MAX_GLIBC=$(AARCH64_MAX_GLIBC) cross/glibc-needed.sh $(AARCH64_BIN)

# --release: the tests share the release build's compiled dependencies
# (tract takes most of the build time) and run faster under qemu.
test-aarch64:
	$(AARCH64_TEST) --release --locked

# What CI runs under qemu: every test of code that differs on aarch64 (the
# NEON pixel kernels, our tract operators' NEON kernels against the scalar
# ones and against tract's stock graph on the bundled model, the library's
# unit tests), without the pipeline/CLI/engine suites, which are the same
# code on both architectures and take most of the emulated time, and
# without building the examples.
test-aarch64-kernels:
	$(AARCH64_TEST) --release --locked --lib --test kernels --test ops

# Each core in turn: the int8 conv has a kernel per core (NEON widening
# without dotprod, `sdot` with it); the second run only runs the tests.
test-aarch64-kernels-cpus:
	set -e; for cpu in $(AARCH64_TEST_CPUS); do \
		echo "=== QEMU_CPU=$$cpu"; $(MAKE) --no-print-directory test-aarch64-kernels QEMU_CPU=$$cpu; \
	done

aarch64-glibc:
	@MAX_GLIBC=$(AARCH64_MAX_GLIBC) cross/glibc-needed.sh $(AARCH64_BIN)

# Starts the built binary on glibc 2.31 (JetPack 5) under qemu-user.
aarch64-glibc231-run:
	cross/run-on-glibc231.sh $(AARCH64_BIN) --version

# make deploy BOARD=rpi5 HOST=user@cart: build, copy binary + model + config,
# install and restart the systemd unit. DRY_RUN=1 prints the ssh/scp
# commands only.
deploy: aarch64
	@test -n "$(BOARD)" && test -n "$(HOST)" || { echo "usage: make deploy BOARD=rpi5 HOST=user@cart" >&2; exit 2; }
	BIN=$(AARCH64_BIN) deploy/deploy.sh $(BOARD) $(HOST)

# --- The same board binary through `cross` and a container ------------------
# cross/image.sh builds the image Cross.toml names (Debian's Rust, linking
# against glibc 2.31, qemu-user); `cross` (cargo install cross --locked
# --version 0.2.5) builds and tests inside it. The host needs only the
# container engine, cross and a host rustc and cargo; no aarch64 toolchain.
#
#   make cross-image                 the image (podman; CROSS_ENGINE=docker)
#   make cross-aarch64               cross build --release: the binary, its
#                                    glibc (<= 2.31), --version under qemu
#   make cross-aarch64-run           info + a 3-frame demo under qemu (glibc 2.31)
#   make cross-test-aarch64-kernels  cross test: the aarch64-specific tests
#   make cross-test-aarch64-kernels-cpus  the same on each board's core
#   make cross-test-aarch64          cross test: the whole suite
#
# CROSS_CUSTOM_TOOLCHAIN=1: the image's cargo (first on its PATH) builds,
# so cross must not `rustup target add` on the host. cross/bin/rustup
# answers cross's `rustup toolchain list` (see there why). Its own target
# folder: the image's standard library is not the host's Debian one, and
# cargo cannot tell them apart (same rustc version), so sharing
# target/aarch64-unknown-linux-gnu with `make aarch64` would mix them.
CROSS            ?= cross
CROSS_ENGINE     ?= podman
CROSS_TARGET_DIR ?= target/cross
CROSS_IMAGE      := $(shell sed -n 's/^image *= *"\(.*\)"/\1/p' Cross.toml)
CROSS_BIN        := $(CROSS_TARGET_DIR)/$(AARCH64_TARGET)/release/lgms-edge
CROSS_CONF       := $(if $(filter podman,$(CROSS_ENGINE)),CONTAINERS_CONF=$(or $(CONTAINERS_CONF),$(CURDIR)/cross/containers.conf))
CROSS_ENV        := PATH="$(CURDIR)/cross/bin:$$PATH" CROSS_CUSTOM_TOOLCHAIN=1 \
                    CROSS_CONTAINER_ENGINE=$(CROSS_ENGINE) CARGO_TARGET_DIR=$(CURDIR)/$(CROSS_TARGET_DIR) $(CROSS_CONF)
# A plain run of the image on the source tree, for what is not a cargo
# command (the glibc check, starting the built binary).
CROSS_RUN        := $(CROSS_CONF) $(CROSS_ENGINE) run --rm -v "$(CURDIR)":/project -w /project $(CROSS_IMAGE)
CROSS_QEMU       := qemu-aarch64-static -L /opt/glibc-2.31
CROSS_MODEL      := models/lgmsnet-phantom-us.f32.onnx

.PHONY: cross-image cross-check cross-aarch64 cross-aarch64-run cross-test-aarch64 cross-test-aarch64-kernels cross-test-aarch64-kernels-cpus

cross-image:
	ENGINE=$(CROSS_ENGINE) cross/image.sh

# Names what is missing and the fix, before cross gives a less direct error.
cross-check:
	@command -v $(CROSS_ENGINE) >/dev/null || { echo "$(CROSS_ENGINE) not found; fix: apt-get install podman runc (or CROSS_ENGINE=docker)" >&2; exit 1; }
	@command -v $(CROSS) >/dev/null || { echo "$(CROSS) not found; fix: cargo install cross --locked --version 0.2.5" >&2; exit 1; }
	@$(CROSS_CONF) $(CROSS_ENGINE) image inspect $(CROSS_IMAGE) >/dev/null 2>&1 || { echo "image $(CROSS_IMAGE) not found; fix: make cross-image CROSS_ENGINE=$(CROSS_ENGINE)" >&2; exit 1; }

cross-aarch64: cross-check
	$(CROSS_ENV) $(CROSS) build --release --locked --target $(AARCH64_TARGET)
	$(CROSS_RUN) sh -c 'MAX_GLIBC=2.31 cross/glibc-needed.sh $(CROSS_BIN) && $(CROSS_QEMU) $(CROSS_BIN) --version'

cross-aarch64-run: cross-check
	$(CROSS_RUN) sh -c '$(CROSS_QEMU) $(CROSS_BIN) info $(CROSS_MODEL) && \
		$(CROSS_QEMU) $(CROSS_BIN) demo --frames 3 --no-gif --out $(CROSS_TARGET_DIR)/demo'

# As test-aarch64(-kernels), in the image: LGMS_EMULATED, LGMS_TEST_RUNNER
# and QEMU_CPU reach the container through Cross.toml's passthrough.
CROSS_TEST_ENV   := LGMS_EMULATED=1 LGMS_TEST_RUNNER="$(CROSS_QEMU)" $(if $(QEMU_CPU),QEMU_CPU=$(QEMU_CPU))

cross-test-aarch64: cross-check
	$(CROSS_ENV) $(CROSS_TEST_ENV) \
		$(CROSS) test --release --locked --target $(AARCH64_TARGET)

cross-test-aarch64-kernels: cross-check
	$(CROSS_ENV) $(CROSS_TEST_ENV) \
		$(CROSS) test --release --locked --target $(AARCH64_TARGET) --lib --test kernels --test ops

# What CI runs: the kernels suite on each board's core, built once.
cross-test-aarch64-kernels-cpus:
	set -e; for cpu in $(AARCH64_TEST_CPUS); do \
		echo "=== QEMU_CPU=$$cpu"; $(MAKE) --no-print-directory cross-test-aarch64-kernels QEMU_CPU=$$cpu; \
	done
