#!/usr/bin/env bash
# Plan a tree from an inventory and push it to the VMs over ssh.
#   ./deploy/deploy.sh inventory.toml [--hedge 2] [--spray] [--ssh-user admin] [--dry-run]
# Needs: the release binaries built here (cargo build --release), ssh access
# to every VM (the inventory's IP addresses), and ./deploy/prepare-host.sh run
# on each VM once.
set -euo pipefail
cd "$(dirname "$0")/.."
INV="${1:?usage: deploy.sh inventory.toml [--hedge H] [--spray] [--ssh-user USER] [--dry-run]}"; shift
USER_AT=""
DRY=0
PLAN_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ssh-user) USER_AT="$2@"; shift ;;
    --dry-run) DRY=1 ;;
    *) PLAN_ARGS+=("$1") ;;
  esac
  shift
done
run() { if [ "$DRY" -eq 1 ]; then echo "+ $*"; else "$@"; fi; }

cargo build --release --bin jasper --bin jasper-proxy --bin jasper-receiver
OUT=$(mktemp -d)
./target/release/jasper plan --inventory "$INV" --out "$OUT" "${PLAN_ARGS[@]}"
for cfg in "$OUT"/*.toml; do
  name=$(basename "$cfg" .toml)
  role=$(sed -n 's/^role = "\(.*\)"/\1/p' "$cfg" | head -1)
  host=$(sed -n 's/^listen = \["\([0-9.]*\):.*/\1/p' "$cfg" | head -1)
  case "$role" in
    proxy) bin=jasper-proxy ;;
    receiver) bin=jasper-receiver ;;
    sender) echo "sender config for the publisher: $cfg (link jasper-sender, Publisher::from_node_config)"; continue ;;
    *) echo "unknown role in $cfg" >&2; exit 1 ;;
  esac
  echo "== $name ($role) on $host"
  # The node's key file (mode 0600, beside the config as keys/<name>.key);
  # never copied anywhere else.
  run scp -q "target/release/$bin" "deploy/systemd/$bin@.service" "$cfg" "$OUT/keys/$name.key" "${USER_AT}${host}:/tmp/"
  run ssh "${USER_AT}${host}" "sudo install -m 755 /tmp/$bin /usr/local/bin/ && sudo install -D -m 644 /tmp/$name.toml /etc/jasper/$name.toml && sudo install -D -m 600 /tmp/$name.key /etc/jasper/keys/$name.key && rm -f /tmp/$name.key && sudo install -m 644 /tmp/$bin@.service /etc/systemd/system/ && sudo systemctl daemon-reload && sudo systemctl restart $bin@$name"
done
echo "configs kept in $OUT (keys in $OUT/keys: keep them secret, or delete them)"
