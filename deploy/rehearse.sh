#!/usr/bin/env bash
# Rehearse a deployment on one machine: the planned tree across network
# namespaces (one per node, veths on a bridge), each node installed as the
# playbook installs it and run as it runs in production, a feed published,
# a proxy and the publisher killed and restarted mid-run, and each
# receiver's report printed.
#
#   sudo deploy/rehearse.sh [--receivers N] [--rate MSGS_PER_S] [--messages M] [--dpdk]
#                           [--bin-dir DIR] [--uid UID] [--max-missing K] [--keep]
#
# --dpdk: proxies and receivers on DPDK (`jasper plan --backend dpdk`, each
# with its own `dpdk` settings: a net_af_packet device on its veth, no
# hugepages), with CAP_NET_RAW and CAP_NET_ADMIN their only capabilities
# (af_packet needs them; a NIC needs deploy/systemd/dpdk.conf's instead).
#
# What is the same as production (deploy/ansible, deploy/systemd):
# - `jasper plan --ansible` over an inventory of the namespaces' addresses
#   writes the configs, keys and hosts.yml; nodes start in hosts.yml's order
#   (receivers, proxies from the last level up, the publisher);
# - every node's files are laid out as install_nodes lays them out, under a
#   root of its own: <root>/etc/jasper/<name>.toml (0640, group jasper) and
#   <root>/etc/jasper/keys/<name>.key (0600, owned by the service user);
# - the real jasper-receiver, jasper-proxy and `jasper publish` binaries
#   with those configs, as an unprivileged user with no capabilities and
#   no_new_privs (the units' User=jasper, CapabilityBoundingSet=);
# - a killed node is started again with the same command, as Restart=always
#   does; the publisher's restart is a new session.
# What is not: systemd's sandbox (no systemd here), real VMs and clocks
# (every namespace reads this host's clock), the network (a bridge).
#
# Needs root (namespaces), iproute2, util-linux (setpriv) and python3 (the
# report). Exits non-zero when a receiver misses more than --max-missing
# messages. Cleans up its namespaces and processes on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RECEIVERS=8
# 1000 msgs/s: the rehearsal checks restarts, reloads and recovery with
# 14 processes on this one machine, not throughput. At 2000 msgs/s a
# 2-core machine with one core busy elsewhere fell behind by a second and
# lost most of session 1 (the guard drops what is a second past its
# deadline); at 1000 it held with the same load.
RATE=1000
MESSAGES=4000
BIN_DIR=""
SVC_UID=64123
MAX_MISSING=0
KEEP=0
DPDK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --receivers) RECEIVERS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --messages) MESSAGES=$2; shift ;;
    --bin-dir) BIN_DIR=$2; shift ;;
    --uid) SVC_UID=$2; shift ;;
    --max-missing) MAX_MISSING=$2; shift ;;
    --keep) KEEP=1 ;;
    --dpdk) DPDK=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "rehearse.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "rehearse.sh: run as root (network namespaces)" >&2; exit 1; }
[ "$RECEIVERS" -ge 4 ] || { echo "rehearse.sh: --receivers must be at least 4" >&2; exit 2; }
for tool in ip setpriv python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "rehearse.sh: $tool is missing (iproute2, util-linux, python3)" >&2; exit 1; }
done

if [ -z "$BIN_DIR" ]; then
  BIN_DIR="$ROOT/target/debug"
  features=()
  [ "$DPDK" -eq 0 ] || features=(--features jasper-cli/dpdk,jasper-proxy/dpdk,jasper-receiver/dpdk)
  echo "== building jasper, jasper-proxy, jasper-receiver"
  cargo build -q --bin jasper --bin jasper-proxy --bin jasper-receiver "${features[@]}"
fi
BIN_DIR=$(cd "$BIN_DIR" && pwd)
for b in jasper jasper-proxy jasper-receiver; do
  [ -x "$BIN_DIR/$b" ] || { echo "rehearse.sh: no $BIN_DIR/$b" >&2; exit 1; }
done
SVC_GID=$SVC_UID

ID=$(( $$ % 1000 ))
P="jr$ID"                      # namespace and interface prefix
W=$(mktemp -d /tmp/jasper-rehearse.XXXXXX)
chmod 755 "$W"
declare -A PID=()              # node name -> pid of what this script started
declare -A RUNS=()             # node name -> times started (logs <name>.<run>.out/.err)
NAMESPACES=()

cleanup() {
  set +e
  for name in "${!PID[@]}"; do
    kill -KILL "${PID[$name]}" 2>/dev/null
  done
  wait 2>/dev/null
  for ns in "${NAMESPACES[@]}"; do
    ip netns del "$ns" 2>/dev/null
  done
  if [ "$KEEP" -eq 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the plan
# Depth 2, sibling hedging H = 1 with spraying: a level-2 proxy can die
# without a receiver missing anything.
FANOUT=$(python3 -c "import math; print(math.ceil(math.sqrt($RECEIVERS)))")
LEVEL2=$(( (RECEIVERS + FANOUT - 1) / FANOUT ))
PROXIES=$(( 2 + LEVEL2 ))  # two hedged roots
SUBNET=10.78.0
INV="$W/inventory.toml"
# Interface names are made from node names (at most 15 characters).
veth() { echo "${P}$1"; }
dpdk_fields() { # NAME INDEX: the node's own EAL settings, lcores alternating
  [ "$DPDK" -eq 1 ] || return 0
  echo "dpdk = { lcores = \"$(( $2 % $(nproc) ))\", vdev = \"net_af_packet0,iface=$(veth "$1")\" }"
}
BACKEND=udp
[ "$DPDK" -eq 0 ] || BACKEND=dpdk
{
  echo "[sender]"
  echo "name = \"exchange\""
  echo "addr = \"$SUBNET.10:7000\""
  for i in $(seq 0 $((PROXIES - 1))); do
    echo "[[proxy]]"
    echo "name = \"proxy$i\""
    echo "addr = \"$SUBNET.$((20 + i)):7000\""
    dpdk_fields "proxy$i" "$i"
  done
  for i in $(seq 0 $((RECEIVERS - 1))); do
    echo "[[receiver]]"
    echo "name = \"mp$i\""
    echo "addr = \"$SUBNET.$((100 + i)):7000\""
    dpdk_fields "mp$i" "$i"
  done
} > "$INV"
echo "== jasper plan ($RECEIVERS receivers, $PROXIES proxies: depth 2, fanout $FANOUT, hedge 1, spray; $BACKEND)"
"$BIN_DIR/jasper" plan --inventory "$INV" --depth 2 --fanout "$FANOUT" --hedge 1 --spray \
  --backend "$BACKEND" --out "$W/plan" --ansible --metrics-port 9300 | sed 's/^/   /'

# Start order and tree levels, as the playbook reads them from hosts.yml.
mapfile -t ORDER < <(sed -n 's/^      - { host: "[^"]*", name: "\([^"]*\)", role: "\([^"]*\)", level: \([0-9]*\),.*/\1 \2 \3/p' "$W/plan/hosts.yml")
[ "${#ORDER[@]}" -eq $((1 + PROXIES + RECEIVERS)) ] || { echo "rehearse.sh: hosts.yml lists ${#ORDER[@]} nodes" >&2; exit 1; }

# ------------------------------------------------------- install, per node
# The layout and modes of deploy/ansible/roles/install_nodes, under one
# root per node; the service user is a bare uid (no account is created).
install_node() {
  local name=$1 r="$W/root/$1"
  install -d -m 755 "$r" "$r/etc"
  install -d -m 750 -o root -g "$SVC_GID" "$r/etc/jasper"
  install -d -m 700 -o "$SVC_UID" -g "$SVC_GID" "$r/etc/jasper/keys"
  install -m 640 -o root -g "$SVC_GID" "$W/plan/$name.toml" "$r/etc/jasper/$name.toml"
  install -m 600 -o "$SVC_UID" -g "$SVC_GID" "$W/plan/keys/$name.key" "$r/etc/jasper/keys/$name.key"
  install -d -m 700 -o "$SVC_UID" -g "$SVC_GID" "$r/run"
}
install -d -m 755 "$W/root" "$W/log"
for entry in "${ORDER[@]}"; do install_node "${entry%% *}"; done
echo "== installed $((${#ORDER[@]})) nodes: <root>/etc/jasper/<name>.toml 0640 root:$SVC_GID, keys/<name>.key 0600 $SVC_UID:$SVC_GID"

# ----------------------------------------------------------- the network
HUB="${P}hub"
ip netns add "$HUB"; NAMESPACES+=("$HUB")
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
# The operator's seat: `jasper status` runs here and scrapes every node.
ip -n "$HUB" addr add "$SUBNET.254/24" dev br0
addr_of() { sed -n 's/^listen = \["\([0-9.]*\):.*/\1/p' "$W/plan/$1.toml" | head -1; }
for entry in "${ORDER[@]}"; do
  read -r name role level <<< "$entry"
  ns="${P}_$name"
  v=$(veth "$name")
  [ ${#v} -le 14 ] || { echo "rehearse.sh: node name $name is too long for an interface name" >&2; exit 1; }
  ip netns add "$ns"; NAMESPACES+=("$ns")
  ip -n "$ns" link set lo up
  ip link add "$v" type veth peer name "${v}h"
  ip link set "$v" netns "$ns"
  ip link set "${v}h" netns "$HUB"
  ip -n "$HUB" link set "${v}h" master br0
  ip -n "$HUB" link set "${v}h" up
  # A DPDK node answers ARP and IP itself: its kernel interface has no address.
  if [ "$DPDK" -eq 0 ] || [ "$role" = sender ]; then
    ip -n "$ns" addr add "$(addr_of "$name")/24" dev "$v"
  fi
  ip -n "$ns" link set "$v" up
done
echo "== network: ${#ORDER[@]} namespaces on a bridge ($SUBNET.0/24)"

# ----------------------------------------------------------- run the nodes
T0=$(date +%s%N)
elapsed() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '%3d.%02d s' $((ms / 1000)) $((ms % 1000 / 10)); }
say() { echo "   [$(elapsed)] $*"; }

# start NAME ROLE [ARGS...]: as the unit's ExecStart, in the node's namespace,
# as the service user without capabilities.
start() {
  local name=$1 role=$2; shift 2
  local cfg="$W/root/$name/etc/jasper/$name.toml" cmd caps=(--inh-caps=-all --bounding-set=-all)
  if [ "$DPDK" -eq 1 ] && [ "$role" != sender ]; then
    caps=(--inh-caps=+net_raw,+net_admin --ambient-caps=+net_raw,+net_admin --bounding-set=-all,+net_raw,+net_admin)
  fi
  case "$role" in
    receiver) cmd=("$BIN_DIR/jasper-receiver" --config "$cfg" --print) ;;
    proxy) cmd=("$BIN_DIR/jasper-proxy" --config "$cfg") ;;
    sender) cmd=("$BIN_DIR/jasper" publish --config "$cfg" "$@") ;;
  esac
  local n=$(( ${RUNS[$name]:-0} + 1 ))
  RUNS[$name]=$n
  # The EAL's runtime files go to the node's own directory (as PrivateTmp).
  ip netns exec "${P}_$name" env XDG_RUNTIME_DIR="$W/root/$name/run" \
    setpriv --reuid="$SVC_UID" --regid="$SVC_GID" --clear-groups \
    "${caps[@]}" --no-new-privs "${cmd[@]}" \
    > "$W/log/$name.$n.out" 2> "$W/log/$name.$n.err" &
  PID[$name]=$!
}
wait_ready() {
  local name=$1 n=${RUNS[$1]}
  for _ in $(seq 1 200); do
    grep -q "^ready" "$W/log/$name.$n.out" 2>/dev/null && return 0
    kill -0 "${PID[$name]}" 2>/dev/null || { echo "$name exited at start-up:" >&2; cat "$W/log/$name.$n.err" >&2; exit 1; }
    sleep 0.05
  done
  echo "$name not ready after 10 s" >&2; cat "$W/log/$name.$n.err" >&2; exit 1
}
stop() { # SIGTERM as systemctl stop, then wait for the report
  local name=$1
  kill -TERM "${PID[$name]}" 2>/dev/null || true
  wait "${PID[$name]}" 2>/dev/null || true
  unset "PID[$name]"
}

# `jasper status --once --json` from the operator's seat; prints who is up
# and down. STATUS_EXPECT checks one node's state: NAME up|down.
status_snapshot() { # LABEL [NAME up|down]
  local out="$W/status.$1.json"
  ip netns exec "$HUB" "$BIN_DIR/jasper" status --plan "$W/plan" --once --json \
    --interval 0.3 --timeout-ms 300 > "$out" 2>/dev/null || true
  python3 - "$out" "$1" "${2:-}" "${3:-}" <<'PY' || { echo "rehearse.sh: status snapshot $1: $2 is not $3" >&2; exit 1; }
import json, sys
out, label, name, want = sys.argv[1:5]
v = json.load(open(out))
down = sorted(v["nodes_down"])
print(f"   status [{label}]: {v['nodes_up']}/{v['nodes_total']} up; down: {', '.join(down) or 'none'}")
if name:
    up = {n["name"]: n["up"] for n in v["nodes"]}
    sys.exit(0 if up.get(name) == (want == "up") else 1)
PY
}

echo "== starting in the plan's order, as the playbook does"
for entry in "${ORDER[@]}"; do
  read -r name role level <<< "$entry"
  [ "$role" = sender ] && continue
  start "$name" "$role"
  wait_ready "$name"
done
say "receivers and proxies ready"
status_snapshot started

# The proxy to kill: the first of the last level (hedging covers it).
VICTIM=$(printf '%s\n' "${ORDER[@]}" | awk '$2 == "proxy" && $3 == 2 { print $1; exit }')
SENDER=$(printf '%s\n' "${ORDER[@]}" | awk '$2 == "sender" { print $1 }')
LONG=$(( RATE * 600 ))        # the first publisher runs until it is killed
start "$SENDER" sender --count "$LONG" --rate "$RATE" --warmup-ms 300
PUB1=${PID[$SENDER]}
say "publisher started (session 1, $RATE msgs/s)"
sleep 1.3
kill -KILL "${PID[$VICTIM]}"; wait "${PID[$VICTIM]}" 2>/dev/null || true
say "$VICTIM killed (SIGKILL)"
status_snapshot proxy-killed "$VICTIM" down
sleep 1
start "$VICTIM" proxy
wait_ready "$VICTIM"
say "$VICTIM restarted"
status_snapshot proxy-restarted "$VICTIM" up
# `systemctl reload`: SIGHUP, the config re-read and taken in place.
kill -HUP "${PID[$VICTIM]}"
sleep 0.3
say "$VICTIM reloaded its config (SIGHUP)"
status_snapshot proxy-reloaded "$VICTIM" up
sleep 1
kill -KILL "$PUB1"; wait "$PUB1" 2>/dev/null || true
# Deadlines before this instant belong to session 1 (they are at most a few
# ms after sending), later ones to session 2 (it starts 0.5 s later).
BOUNDARY_NS=$(( $(date +%s%N) + 250000000 ))
say "publisher killed (SIGKILL): session 1 ends without an end of session"
status_snapshot publisher-killed "$SENDER" down
sleep 0.5
start "$SENDER" sender --count "$MESSAGES" --rate "$RATE" --warmup-ms 300
say "publisher restarted (session 2, $MESSAGES messages)"
sleep 0.6
status_snapshot publisher-restarted "$SENDER" up
wait "${PID[$SENDER]}" || { echo "the publisher failed:" >&2; cat "$W/log/$SENDER.2.err" >&2; exit 1; }
unset "PID[$SENDER]"
say "$(grep '^published' "$W/log/$SENDER.2.out" | cut -c1-60)"
status_snapshot published
sleep 1
for entry in "${ORDER[@]}"; do
  read -r name role level <<< "$entry"
  [ "$role" = sender ] || stop "$name"
done
say "receivers and proxies stopped (SIGTERM)"

# ------------------------------------------------------------------ report
echo "== report"
python3 - "$W/log" "$SENDER" "$RECEIVERS" "$MAX_MISSING" "$BOUNDARY_NS" <<'PY'
import glob, json, os, re, sys

logs, sender = sys.argv[1], sys.argv[2]
n_receivers, max_missing, boundary_ns = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
line_re = re.compile(r"^(\S+) seq=(\d+) bytes=\d+ deadline=(\d+) released_host=(\d+) late=(\w+)")

def last_json(path):
    for line in reversed(open(path).read().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None

receivers = {}
for out in sorted(glob.glob(os.path.join(logs, "mp*.1.out"))):
    name = os.path.basename(out).split(".")[0]
    # Releases come in deadline order, not sequence order (a late message
    # goes out on arrival): the session is told by the deadline's time.
    sessions = [{}, {}]
    for line in open(out):
        m = line_re.match(line)
        if not m:
            continue
        seq, deadline, released, late = int(m[2]), int(m[3]), int(m[4]), m[5] == "true"
        s = sessions[0 if deadline < boundary_ns else 1]
        s.setdefault(seq, []).append((released, deadline, late))
    receivers[name] = {"sessions": sessions, "report": last_json(out.replace(".out", ".err"))}

published2 = None
out2 = os.path.join(logs, f"{sender}.2.out")
m = re.search(r"published (\d+) messages", open(out2).read())
if m:
    published2 = int(m[1])
# The killed publisher cannot say what it sent: the highest sequence any
# receiver saw in session 1 stands for it.
published1 = 1 + max((max(r["sessions"][0]) for r in receivers.values() if r["sessions"][0]), default=-1)
published = [published1, published2 or 0]

rows, total_missing, spreads, lates, releases = [], 0, {}, 0, 0
for name, r in receivers.items():
    got = [len(s) for s in r["sessions"]]
    dup = sum(len(v) - 1 for s in r["sessions"] for v in s.values())
    missing = sum(max(0, published[i] - got[i]) for i in range(2))
    late = sum(1 for s in r["sessions"] for v in s.values() if v[0][2])
    total_missing += missing
    lates += late
    releases += sum(got)
    for i, s in enumerate(r["sessions"]):
        for seq, v in s.items():
            spreads.setdefault((i, seq), []).append(v[0][0])
    rep = r["report"] or {}
    core = rep.get("core", {})
    unfilled = core.get("gaps_detected", 0) - core.get("gaps_filled", 0) if core else "?"
    rows.append((name, got[0], got[1], missing, dup, late, core.get("sessions", "?"), unfilled,
                 rep.get("upstreams_dead", "?"), rep.get("clock_status", "?")))

print(f"   session 1: {published1} messages (publisher killed: the highest sequence any receiver saw); "
      f"session 2: {published2} messages (the publisher's count)")
print(f"   {'receiver':<10}{'session 1':>10}{'session 2':>10}{'missing':>9}{'dups':>6}{'late':>7}"
      f"{'sessions':>10}{'unfilled gaps':>15}  dead at stop  clock")
for row in rows:
    print(f"   {row[0]:<10}{row[1]:>10}{row[2]:>10}{row[3]:>9}{row[4]:>6}{row[5]:>7}{row[6]:>10}{row[7]:>15}  {str(row[8]):<13} {row[9]}")
full = sorted(max(v) - min(v) for v in spreads.values() if len(v) == len(receivers))
def q(p):
    return full[min(len(full) - 1, int(p * len(full)))] if full else 0
print(f"   release spread across receivers (one host clock), {len(full)} messages every receiver got: "
      f"p50 {q(0.5)/1000:.1f} µs, p99 {q(0.99)/1000:.1f} µs, max {full[-1]/1000 if full else 0:.1f} µs; "
      f"late {lates}/{releases}")
for path in sorted(glob.glob(os.path.join(logs, "proxy*.err"))):
    rep = last_json(path)
    if rep:
        core = rep.get("core", {})
        print(f"   {os.path.basename(path)[:-4]:<10} packets in {core.get('packets_in', '?'):>6}, copies out "
              f"{core.get('copies_out', '?'):>6}, sessions {core.get('sessions', '?')}, dead upstreams {rep.get('upstreams_dead')}")
    else:
        print(f"   {os.path.basename(path)[:-4]:<10} no report (killed with SIGKILL)")
print(f"REHEARSAL receivers={len(receivers)} messages={sum(published)} missing={total_missing}")
ok = len(receivers) == n_receivers and published2 is not None and total_missing <= max_missing and published1 > 0
if not ok:
    print(f"rehearsal FAILED: want {n_receivers} receivers reporting, both sessions, at most {max_missing} missing", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
