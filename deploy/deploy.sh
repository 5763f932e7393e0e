#!/bin/sh
# Deploys lgms-edge to a board over ssh:
#   deploy/deploy.sh BOARD USER@HOST   (what `make deploy BOARD=... HOST=...` runs)
# Copies the aarch64 binary, the board's config and the model it names to
# /opt/lgms-edge, installs the systemd unit, creates the `lgms` user and
# (re)starts the service. The binary must be built first (make aarch64, or
# make aarch64 AARCH64_LINK=zig, or make cross-aarch64, for JetPack 5). DRY_RUN=1 prints the commands instead.
set -eu
board=${1:?usage: deploy.sh BOARD USER@HOST}
host=${2:?usage: deploy.sh BOARD USER@HOST}
bin=${BIN:-target/aarch64-unknown-linux-gnu/release/lgms-edge}
config=boards/$board.toml
unit=deploy/lgms-edge.service

[ -f "$config" ] || { echo "deploy: no board file $config; fix: BOARD is one of: $(ls boards | sed 's/\.toml$//' | tr '\n' ' ')" >&2; exit 2; }
[ -f "$bin" ] || { echo "deploy: no binary $bin; fix: make aarch64 (or make aarch64 AARCH64_LINK=zig, or make cross-aarch64 with BIN=target/cross/aarch64-unknown-linux-gnu/release/lgms-edge, for JetPack 5)" >&2; exit 2; }
# The model path as the board file gives it (relative to the project root).
model=$(sed -n 's/^path *= *"\(.*\)"/\1/p' "$config" | head -n1)
[ -n "$model" ] && [ -f "$model" ] || { echo "deploy: $config names model \"$model\", which is not here; fix: make model, or edit the board file" >&2; exit 2; }
sidecar=${model%.onnx}.json

run() { if [ "${DRY_RUN:-}" = 1 ]; then echo "+ $*"; else "$@"; fi; }

stage=/tmp/lgms-edge-deploy.$$
run ssh "$host" "mkdir -p $stage/models"
run scp "$bin" "$host:$stage/lgms-edge"
run scp "$config" "$host:$stage/config.toml"
run scp "$unit" "$host:$stage/lgms-edge.service"
if [ -f "$sidecar" ]; then run scp "$model" "$sidecar" "$host:$stage/models/"; else run scp "$model" "$host:$stage/models/"; fi
# On the board: install under /opt/lgms-edge, config's model path stays
# "models/..." relative to the working directory.
run ssh "$host" "sudo sh -eu -c '
id lgms >/dev/null 2>&1 || useradd --system --no-create-home --groups video,render lgms || useradd --system --no-create-home --groups video lgms
install -d /opt/lgms-edge/bin /opt/lgms-edge/models /opt/lgms-edge/out
install -m 0755 $stage/lgms-edge /opt/lgms-edge/bin/lgms-edge
install -m 0644 $stage/config.toml /opt/lgms-edge/config.toml
install -m 0644 $stage/models/* /opt/lgms-edge/models/
chown lgms /opt/lgms-edge/out
install -m 0644 $stage/lgms-edge.service /etc/systemd/system/lgms-edge.service
rm -rf $stage
/opt/lgms-edge/bin/lgms-edge --version
systemctl daemon-reload
systemctl enable lgms-edge.service
systemctl restart lgms-edge.service
sleep 3
systemctl --no-pager --lines=20 status lgms-edge.service
'"
