#!/bin/bash
# Boots Debian's stock kernel in qemu (software emulation, no KVM needed)
# with a busybox initramfs holding vm_check, and runs the capture and
# display checks against the kernel's own virtual drivers:
# vivid (V4L2), vfb (fbdev), bochs (DRM/KMS).
#
#   tests/vm/run.sh            build, boot, check; exit 0 when all pass
#   KVER=6.1.0-56-amd64 ...    pick the kernel (default: newest in /lib/modules)
#   VM_TIMEOUT=600 ...         seconds before the VM is killed
#   VM_SCREENDUMP=out.ppm ...  also dump the bochs display as qemu sees it
#
# Needs: qemu-system-x86, linux-image-amd64, busybox-static, cpio, cargo.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KVER=${KVER:-$(ls /lib/modules | sort -V | tail -1)}
KERNEL=${KERNEL:-/boot/vmlinuz-$KVER}
MODDIR=/lib/modules/$KVER
WORK=${VM_WORK:-$(mktemp -d /tmp/lgms-vm.XXXXXX)}
TIMEOUT=${VM_TIMEOUT:-600}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

for t in qemu-system-x86_64 busybox cpio strip; do
    command -v "$t" >/dev/null || { echo "run.sh: $t missing; fix: apt-get install qemu-system-x86 busybox-static cpio" >&2; exit 2; }
done
[ -r "$KERNEL" ] || { echo "run.sh: no kernel $KERNEL; fix: apt-get install linux-image-amd64" >&2; exit 2; }
busybox --list | grep -qx modprobe || { echo "run.sh: busybox lacks modprobe" >&2; exit 2; }

echo "== building vm_check"
# --release: the same compiled tract as `make test` and `make demo` (one
# build for all three), and faster code inside the emulated VM.
(cd "$ROOT" && cargo build --release --quiet --example vm_check --bin lgms-edge)
BIN=$CARGO_TARGET_DIR/release/examples/vm_check
CLI=$CARGO_TARGET_DIR/release/lgms-edge

echo "== initramfs in $WORK"
R=$WORK/root
rm -rf "$R" && mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,etc,lib/modules/$KVER}
cp "$(command -v busybox)" "$R/bin/busybox"
for a in sh mount umount modprobe insmod rmmod lsmod ls cat echo poweroff sleep dmesg grep cut timeout sync mkdir uname; do
    ln -sf busybox "$R/bin/$a"
done
# Debug info (release keeps line tables) is most of the file; the VM keeps only the code.
strip -o "$R/bin/vm_check" "$BIN"
# The CLI with the VM board and its model, for the end-to-end run.
strip -o "$R/bin/lgms-edge" "$CLI"
mkdir -p "$R/etc/lgms/boards" "$R/etc/lgms/models"
cp "$ROOT/tests/vm/x86-dev-vm.toml" "$R/etc/lgms/boards/"
cp "$ROOT/tests/fixtures/tiny_dark.onnx" "$R/etc/lgms/models/"
# The binary's shared libraries (glibc), so no static build is needed.
for lib in $(ldd "$BIN" "$CLI" | grep -o '/[^ ]*' | grep -v ':$' | sort -u); do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
done
# The modules and everything they depend on, from modules.dep.
mods=$(grep -E '^kernel/drivers/(media/test-drivers/vivid/vivid|video/fbdev/vfb|gpu/drm/tiny/bochs|input/misc/uinput|input/evdev)\.ko(\.[a-z]+)?:' "$MODDIR/modules.dep" | tr -d ':' | tr ' ' '\n' | sort -u)
[ -n "$mods" ] || { echo "run.sh: vivid/vfb/bochs/uinput/evdev not in $MODDIR/modules.dep" >&2; exit 2; }
for m in $mods; do
    mkdir -p "$R/lib/modules/$KVER/$(dirname "$m")"
    cp "$MODDIR/$m" "$R/lib/modules/$KVER/$m"
done
cp "$MODDIR"/modules.{dep,alias,builtin,order} "$R/lib/modules/$KVER/" 2>/dev/null || true
cp "$ROOT/tests/vm/init.sh" "$R/init"
chmod +x "$R/init"
if [ -n "${VM_EXTRA:-}" ]; then cp -r "$VM_EXTRA"/. "$R/"; fi
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/initrd.gz")

echo "== booting $KERNEL (tcg)"
LOG=$WORK/console.log
MON=()
if [ -n "${VM_SCREENDUMP:-}" ]; then MON=(-monitor "unix:$WORK/mon.sock,server,nowait"); fi
set +e
timeout "$TIMEOUT" qemu-system-x86_64 -machine q35 -accel tcg -cpu max -m 1024 -smp 2 \
    -nographic -no-reboot -nic none -vga none -device bochs-display "${MON[@]}" \
    -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 VM_HOLD=${VM_SCREENDUMP:+1}" </dev/null 2>&1 | tee "$LOG" &
QPID=$!
if [ -n "${VM_SCREENDUMP:-}" ]; then
    ( while ! grep -q VMDRM-READY "$LOG" 2>/dev/null; do sleep 1; kill -0 $QPID 2>/dev/null || exit 0; done
      sleep 1
      python3 -c "import socket,time;s=socket.socket(socket.AF_UNIX);s.connect('$WORK/mon.sock');s.sendall(b'screendump $VM_SCREENDUMP\n');time.sleep(1)" ) &
fi
wait $QPID
rc=$?
set -e
[ $rc -eq 124 ] && echo "run.sh: VM timed out after ${TIMEOUT}s" >&2
result=$(grep -a '^VMRESULT' "$LOG" | tail -1 | tr -d '\r')
echo "== $result"
grep -a '^VMCHECK' "$LOG" | tr -d '\r' | sed 's/^/   /'
case "$result" in
    "VMRESULT pass="*" fail=0") exit 0 ;;
    *) exit 1 ;;
esac
