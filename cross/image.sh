#!/bin/sh
# Builds the project's cross image (the one Cross.toml names) locally, from
# Debian packages only: no image registry is needed.
#
#   cross/image.sh                 podman (the default)
#   ENGINE=docker cross/image.sh   Docker
#
# 1. base: Debian bookworm (`debootstrap --variant=minbase`),
#    imported as localhost/lgms-edge-bookworm:minbase; done once, skipped
#    while that image exists (REBUILD_BASE=1 redoes it). Needs root and
#    debootstrap. BASE_IMAGE=debian:bookworm-slim uses a registry's image
#    instead (a laptop with Docker Hub, no debootstrap, no root).
# 2. toolchain layer: cross/Containerfile (Debian's Rust, the aarch64 gcc and
#    glibc 2.31, qemu-user), tagged as Cross.toml's `image`.
#
# With podman, CONTAINERS_CONF defaults to cross/containers.conf (runc,
# cgroupfs, no ulimits: what podman needs on the project's build machines).
set -eu
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-podman}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_TAG=localhost/lgms-edge-bookworm:minbase

die() { echo "cross/image.sh: $*" >&2; exit 1; }
now() { date +%s; }

command -v "$ENGINE" >/dev/null 2>&1 ||
    die "container engine '$ENGINE' not found; fix: apt-get install podman runc (or install Docker and set ENGINE=docker)"
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
    CONTAINERS_CONF=$PWD/cross/containers.conf
    export CONTAINERS_CONF
fi
"$ENGINE" info >/dev/null 2>&1 ||
    die "'$ENGINE info' fails, so $ENGINE cannot run containers; fix: what '$ENGINE info' says (Docker: start the daemon; podman: see cross/containers.conf)"

# The tag comes from Cross.toml, so the two cannot disagree.
IMAGE=$(sed -n 's/^image *= *"\(.*\)"/\1/p' Cross.toml | head -n1)
[ -n "$IMAGE" ] || die "Cross.toml has no image = \"...\" line under [target.aarch64-unknown-linux-gnu]; fix: restore it"

start=$(now)
if [ -n "${BASE_IMAGE:-}" ]; then
    base=$BASE_IMAGE
    echo "cross/image.sh: base image $base (BASE_IMAGE)"
elif [ "${REBUILD_BASE:-0}" != 1 ] && "$ENGINE" image inspect "$BASE_TAG" >/dev/null 2>&1; then
    base=$BASE_TAG
    echo "cross/image.sh: base image $base exists (REBUILD_BASE=1 rebuilds it)"
else
    base=$BASE_TAG
    [ "$(id -u)" = 0 ] ||
        die "debootstrap needs root; fix: sudo cross/image.sh, or BASE_IMAGE=debian:bookworm-slim to start from a registry image"
    command -v debootstrap >/dev/null 2>&1 ||
        die "debootstrap not found; fix: apt-get install debootstrap (or BASE_IMAGE=debian:bookworm-slim)"
    root=$(mktemp -d "${TMPDIR:-/tmp}/lgms-bookworm.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "cross/image.sh: debootstrap bookworm (minbase) from $MIRROR into $root"
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 ||
        { tail -n 20 "$root.log" >&2; die "debootstrap failed (log above, full log: $root.log)"; }
    rm -f "$root.log"
    tar -C "$root" -c . | "$ENGINE" import - "$base" >/dev/null
    echo "cross/image.sh: imported $base ($(( $(now) - start )) s)"
fi

step=$(now)
"$ENGINE" build -f cross/Containerfile \
    --build-arg BASE="$base" --build-arg DEBIAN_MIRROR="$MIRROR" \
    -t "$IMAGE" cross
echo "cross/image.sh: built $IMAGE ($(( $(now) - step )) s; $(( $(now) - start )) s in all)"
"$ENGINE" run --rm "$IMAGE" sh -c 'ldd --version | head -n1; rustc --version; aarch64-linux-gnu-gcc --version | head -n1'
