#!/bin/sh
# Installs what `make aarch64` and `make test-aarch64` need on a Debian 12
# (bookworm) x86_64 host; safe to run again (installs only what is missing).
#   cross/deps.sh            Debian's rustc + aarch64 std, the aarch64 gcc
#                            toolchain, qemu-user and the arm64 glibc it runs
#                            tests with, plus zig and cargo-zigbuild (pip
#                            wheels) that link against glibc 2.31
#   cross/deps.sh --no-zig   the apt packages only (for AARCH64_LINK=gcc)
set -eu

apt_pkgs="rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu qemu-user-static libc6:arm64 libgcc-s1:arm64"

missing=""
for p in $apt_pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "cross/deps.sh: installing$missing"
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

if [ "${1:-}" != "--no-zig" ]; then
    # Both are wheels (zig itself; cargo-zigbuild prebuilt): nothing to
    # compile. cargo-zigbuild finds zig through `python3 -m ziglang`.
    python3 -m ziglang version >/dev/null 2>&1 || python3 -m pip install --quiet ziglang
    command -v cargo-zigbuild >/dev/null 2>&1 || {
        python3 -m pip install --quiet cargo-zigbuild
        # pyenv only puts new console scripts on PATH after a rehash.
        if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    }
    echo "cross/deps.sh: zig $(python3 -m ziglang version), $(cargo-zigbuild --version)"
fi
echo "cross/deps.sh: aarch64 toolchain ready ($(/usr/bin/rustc --version))"
