# aarch64 (board) builds and tests from an x86_64 Debian host.
# Included by the top-level Makefile; needs the packages that cross/deps.sh
# installs (it installs nothing itself).
#
#   make aarch64         release binary for aarch64-unknown-linux-gnu
#   make test-aarch64    the test suite under qemu-user
#   make aarch64-glibc   the newest glibc symbol version the binary needs
#   make aarch64-zig     the same binary linked by zig against glibc 2.31
#                        (JetPack 5); needs `cross/deps.sh --zig`
#
# Debian's rustc-web ships the aarch64 standard library
# (libstd-rust-web-dev:arm64); rustup's toolchain, if first on PATH, has no
# aarch64 std here, so these targets name Debian's compiler explicitly.

AARCH64_TARGET  := aarch64-unknown-linux-gnu
AARCH64_RUSTC   ?= /usr/bin/rustc
AARCH64_CARGO   ?= /usr/bin/cargo
AARCH64_ENV     := RUSTC=$(AARCH64_RUSTC)
AARCH64_DIR     := $(or $(CARGO_TARGET_DIR),target)/$(AARCH64_TARGET)
AARCH64_BIN     := $(AARCH64_DIR)/release/lgms-edge
# Oldest glibc among the supported boards (JetPack 5 = Ubuntu 20.04).
AARCH64_GLIBC   ?= 2.31
# Network tests are slow under emulation (~40 s per full inference); the
# suite reads this to run one frame per network test.
QEMU_TEST_ENV   := LGMS_EMULATED=1

.PHONY: aarch64 test-aarch64 aarch64-glibc aarch64-zig

aarch64:
	$(AARCH64_ENV) $(AARCH64_CARGO) build --release --locked --target $(AARCH64_TARGET)
	@echo "built $(AARCH64_BIN)"

test-aarch64:
	$(AARCH64_ENV) $(QEMU_TEST_ENV) $(AARCH64_CARGO) test --release --locked --target $(AARCH64_TARGET)

aarch64-glibc: aarch64
	@cross/glibc-needed.sh $(AARCH64_BIN)

aarch64-zig:
	$(AARCH64_ENV) $(AARCH64_CARGO) zigbuild --release --locked --target $(AARCH64_TARGET).$(AARCH64_GLIBC)
	@cross/glibc-needed.sh $(AARCH64_DIR)/release/lgms-edge

# make deploy BOARD=rpi5 HOST=user@cart: build, copy binary + model + config,
# install and restart the systemd unit. JetPack 5 boards (glibc 2.31) get
# the zig-linked build; DRY_RUN=1 prints the ssh/scp commands only.
.PHONY: deploy
deploy:
	@test -n "$(BOARD)" && test -n "$(HOST)" || { echo "usage: make deploy BOARD=rpi5 HOST=user@cart" >&2; exit 2; }
	$(MAKE) $(if $(filter jetson%,$(BOARD)),aarch64-zig,aarch64)
	BIN=$(AARCH64_BIN) deploy/deploy.sh $(BOARD) $(HOST)
