#!/bin/sh
# /init of the test VM: load the kernel's virtual drivers and run the
# checks against them. Each check prints "VMCHECK <name> PASS|FAIL ...";
# the last line is "VMRESULT pass=N fail=M". Then the VM powers off.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp && mount -t tmpfs tmp /tmp
export PATH=/bin:/sbin RUST_LOG=${RUST_LOG:-info} RUST_BACKTRACE=1
pass=0
fail=0
run() {
    if /bin/vm_check "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
}
echo "VMINFO kernel $(uname -r) up $(cut -d' ' -f1 /proc/uptime)s"

# V4L2: vivid with one capture node (webcam input, 75% colour bars).
if modprobe vivid n_devs=1 node_types=0x1; then
    run capture yuyv
    run capture nv12
    run capture rgb24
    run capture grey
    run drops
    run reconnect
else
    echo "VMCHECK modprobe-vivid FAIL"; fail=$((fail + 1))
fi

# fbdev: vfb, 4 MiB so that 640x480x32bpp fits twice (panning).
if modprobe vfb vfb_enable=1 videomemorysize=4194304; then
    run fb 16
    run fb 32
    run fb 8
else
    echo "VMCHECK modprobe-vfb FAIL"; fail=$((fail + 1))
fi
rmmod vfb 2>/dev/null

# DRM/KMS: bochs (qemu -device bochs-display).
if modprobe bochs && [ -e /dev/dri/card0 ]; then
    VM_HOLD=$VM_HOLD run drm
else
    echo "VMCHECK modprobe-bochs FAIL"; fail=$((fail + 1))
fi

# A foot switch: a uinput keyboard whose key presses reach the control
# channel through evdev.
if modprobe evdev && modprobe uinput && [ -e /dev/uinput ]; then
    run keys
else
    echo "VMCHECK modprobe-uinput FAIL"; fail=$((fail + 1))
fi

# The CLI end to end: vivid -> pipeline -> vfb, recording what is shown;
# the recording must hold vivid's bars under the overlay.
if [ -x /bin/lgms-edge ] && [ -f /etc/lgms/boards/x86-dev-vm.toml ]; then
    rmmod bochs 2>/dev/null
    modprobe vivid n_devs=1 node_types=0x1 2>/dev/null
    modprobe vfb vfb_enable=1 videomemorysize=4194304
    if (cd /etc/lgms && timeout 300 /bin/lgms-edge run --config boards/x86-dev-vm.toml); then
        run bars-in /tmp/shown.y4m
    else
        echo "VMCHECK cli-run FAIL rc=$?"; fail=$((fail + 1))
    fi
fi

echo "VMRESULT pass=$pass fail=$fail"
sync
poweroff -f
