# Included by the top-level Makefile: `make test-vm` boots Debian's stock
# kernel in qemu (TCG, no KVM) and checks V4L2 capture (vivid), fbdev
# display (vfb) and DRM/KMS display (bochs) against the real drivers.
.PHONY: test-vm
test-vm:
	tests/vm/run.sh
