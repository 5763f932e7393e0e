#!/usr/bin/env bash
# Runs an aarch64 lgms-edge under qemu-user against Debian bullseye's
# glibc 2.31 (the glibc of JetPack 5 / Ubuntu 20.04), to check without a
# Jetson that the binary starts there:
#
#   cross/run-on-glibc231.sh BINARY [ARGS...]     (default ARGS: --version)
#
# Downloads libc6 and libgcc-s1 (arm64, bullseye) from deb.debian.org once
# into ${GLIBC231_DIR:-target/glibc-2.31}. A gcc-linked binary fails here
# with "version `GLIBC_2.34' not found"; `make aarch64 AARCH64_LINK=zig`
# builds one that must not.
set -euo pipefail
bin=${1:?usage: cross/run-on-glibc231.sh BINARY [ARGS...]}
shift
[ $# -gt 0 ] || set -- --version
root=${GLIBC231_DIR:-target/glibc-2.31}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ ! -e "$root/lib/aarch64-linux-gnu/libc.so.6" ]; then
    mkdir -p "$root"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    curl -fsS "$mirror/dists/bullseye/main/binary-arm64/Packages.xz" | xz -d > "$tmp/Packages"
    for pkg in libc6 libgcc-s1; do
        file=$(awk -v p="$pkg" '$0 == "Package: " p {f = 1} f && /^Filename:/ {print $2; exit}' "$tmp/Packages")
        [ -n "$file" ] || { echo "run-on-glibc231: $pkg not in bullseye's index" >&2; exit 1; }
        curl -fsS -o "$tmp/$pkg.deb" "$mirror/$file"
        dpkg-deb -x "$tmp/$pkg.deb" "$root"
    done
fi
exec qemu-aarch64-static -L "$root" "$bin" "$@"
