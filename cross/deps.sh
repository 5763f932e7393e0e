#!/bin/sh
# Installs what `make aarch64` and `make test-aarch64` need on a Debian 12
# (bookworm) x86_64 host; safe to run again (does nothing when all is there).
#   cross/deps.sh         compiler, aarch64 std, linker, qemu-user
#   cross/deps.sh --zig   also zig + cargo-zigbuild (`make aarch64-zig`)
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

if [ "${1:-}" = "--zig" ]; then
    # Both ship as wheels (zig itself, and cargo-zigbuild prebuilt):
    # nothing to compile. cargo-zigbuild finds zig through `python3 -m ziglang`.
    python3 -m ziglang version >/dev/null 2>&1 || pip install --quiet ziglang
    command -v cargo-zigbuild >/dev/null 2>&1 || pip install --quiet cargo-zigbuild
fi
echo "cross/deps.sh: aarch64 toolchain ready ($(/usr/bin/rustc --version))"
