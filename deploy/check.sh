#!/usr/bin/env bash
# Check the deployment files against plans `jasper plan` writes:
# - installs ansible-core and ansible-lint from PyPI into a venv (fails,
#   loudly, when PyPI is unreachable: nothing is skipped silently);
# - plans two trees (kernel UDP from deploy/inventory.example.toml, and a
#   DPDK one) and checks the hosts.yml each wrote parses as an Ansible
#   inventory with the groups and start order the playbook uses;
# - ansible-playbook --syntax-check against both, and ansible-lint
#   (production profile);
# - the playbook run on this machine without changing it: both roles in
#   check mode, the start plays against a systemctl stand-in whose log
#   shows the order units start in (receivers, proxies bottom-up, publisher);
# - systemd-analyze verify on the units and systemd-analyze security with
#   an exposure threshold (the DPDK drop-in included);
# - terraform fmt, validate and test (mocked provider) when terraform and the AWS provider are on
#   this machine (they cannot be installed from the package registries
#   reached here); otherwise it says the Terraform was NOT validated.
#
#   deploy/check.sh                 # uses target/debug/jasper (built if missing)
#   JASPER=target/release/jasper deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ANSIBLE_CORE_VERSION=2.19.14
ANSIBLE_LINT_VERSION=26.10.1
VENV=${JASPER_ANSIBLE_VENV:-$ROOT/target/ansible-venv}
JASPER=${JASPER:-$ROOT/target/debug/jasper}

fail() { echo "deploy/check.sh: $*" >&2; exit 1; }

echo "== ansible-core $ANSIBLE_CORE_VERSION and ansible-lint $ANSIBLE_LINT_VERSION (venv $VENV)"
installed=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("ansible-core"), m.version("ansible-lint"))' 2>/dev/null || true)
if [ "$installed" != "$ANSIBLE_CORE_VERSION $ANSIBLE_LINT_VERSION" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "python3 venv missing: installing python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
      || fail "cannot install python3-venv with apt"
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV" || fail "cannot create a Python venv at $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "ansible-core==$ANSIBLE_CORE_VERSION" "ansible-lint==$ANSIBLE_LINT_VERSION" \
    || fail "cannot install ansible-core/ansible-lint from PyPI (is the registry reachable?): the deployment is NOT checked"
fi
export PATH="$VENV/bin:$PATH"
export ANSIBLE_CONFIG="$ROOT/deploy/ansible/ansible.cfg"
export ANSIBLE_LOCAL_TEMP="$VENV/tmp" ANSIBLE_HOME="$VENV/ansible-home"

# The install role copies jasper, jasper-proxy and jasper-receiver from the
# directory holding $JASPER: build whichever is missing (a clean checkout has none).
BIN_DIR=$(dirname "$JASPER")
missing=()
for b in jasper jasper-proxy jasper-receiver; do
  [ -x "$BIN_DIR/$b" ] || missing+=(--bin "$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$BIN_DIR" != "$ROOT/target/debug" ]; then
    fail "$BIN_DIR lacks ${missing[*]}: build them there (e.g. cargo build --release --bins) or unset JASPER"
  fi
  echo "== building ${missing[*]}"
  cargo build -q --all-features "${missing[@]}"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== plans"
"$JASPER" plan --inventory deploy/inventory.example.toml --depth 2 --fanout 3 --hedge 1 \
  --out "$WORK/udp" --ansible >/dev/null
# A DPDK tree: every proxy and receiver with its own cores and NIC.
cat > "$WORK/dpdk.toml" <<'TOML'
[sender]
name = "exchange-pub"
addr = "10.0.0.10:7000"
[[proxy]]
name = "proxy-root"
addr = "10.0.1.1:7000"
host = "10.0.100.1"
dpdk = { lcores = "1", pci = "0000:00:06.0" }
[[proxy]]
name = "proxy-a"
addr = "10.0.1.2:7000"
host = "10.0.100.2"
dpdk = { lcores = "1-2", pci = "0000:00:06.0", hugepages = 2048 }
[[receiver]]
name = "mp-alpha"
addr = "10.0.2.1:7000"
host = "10.0.200.1"
dpdk = { lcores = "1", pci = "0000:00:07.0" }
[[receiver]]
name = "mp-beta"
addr = "10.0.2.2:7000"
host = "10.0.200.2"
dpdk = { lcores = "1", pci = "0000:00:07.0" }
TOML
"$JASPER" plan --inventory "$WORK/dpdk.toml" --depth 2 --fanout 2 --roots 1 --backend dpdk \
  --out "$WORK/dpdk" --ansible >/dev/null
# A DPDK node without its settings is an error naming the node and field.
sed '/^name = "mp-beta"/,$ s/^dpdk = .*/dpdk = { lcores = "1" }/' "$WORK/dpdk.toml" > "$WORK/bad.toml"
if out=$("$JASPER" plan --inventory "$WORK/bad.toml" --depth 2 --fanout 2 --roots 1 --backend dpdk 2>&1); then
  fail "a DPDK node without dpdk.pci was planned"
fi
echo "$out" | grep -q 'node "mp-beta": `dpdk.pci` is missing' || fail "unexpected error: $out"
grep -q '"-a", "0000:00:07.0"' "$WORK/dpdk/mp-alpha.toml" || fail "mp-alpha.toml lacks its own PCI address"
if grep -rq "0000:00:06.0" "$WORK/dpdk/mp-alpha.toml"; then fail "a shared placeholder reached mp-alpha.toml"; fi

for plan in udp dpdk; do
  echo "== $plan plan: hosts.yml as Ansible reads it"
  ansible-inventory -i "$WORK/$plan/hosts.yml" --list > "$WORK/$plan.json"
  python3 - "$WORK/$plan.json" "$plan" <<'PY'
import json, sys
inv = json.load(open(sys.argv[1]))
plan = sys.argv[2]
hv = inv["_meta"]["hostvars"]
order = next(iter(hv.values()))["jasper_start_order"]
roles = [n["role"] for n in order]
assert roles == sorted(roles, key=["receiver", "proxy", "sender"].index), roles
levels = [n["level"] for n in order if n["role"] == "proxy"]
assert levels == sorted(levels, reverse=True), levels
for g in ["jasper_sender", "jasper_proxies", "jasper_receivers", "jasper_proxies_level_1"]:
    assert inv.get(g, {}).get("hosts"), (g, inv.get(g))
nodes = sum(len(v["jasper_nodes"]) for v in hv.values())
assert nodes == len(order), (nodes, len(order))
if plan == "dpdk":
    assert sorted(inv["jasper_dpdk"]["hosts"]) == sorted(h for h in hv if h != "10.0.0.10"), inv["jasper_dpdk"]
    assert hv["10.0.100.2"]["jasper_hugepages"] == 2048, hv["10.0.100.2"]
    assert all(n["dpdk"] for h, v in hv.items() for n in v["jasper_nodes"] if n["role"] != "sender")
print(f"   {len(hv)} hosts, {nodes} nodes, start order {[n['name'] for n in order]}")
PY
  echo "== $plan plan: ansible-playbook --syntax-check"
  ansible-playbook -i "$WORK/$plan/hosts.yml" deploy/ansible/site.yml --syntax-check
done

# The playbook run for real on this machine, changing nothing: prepare_host
# and install_nodes in check mode, and the start plays against a systemctl
# stand-in that logs what it is asked, to check the order units start in.
cat > "$WORK/systemctl" <<'SH'
#!/bin/sh
echo "$*" >> "$JASPER_SYSTEMCTL_LOG"
case "$1" in
  show) printf 'Id=%s\nLoadState=loaded\nActiveState=inactive\nSubState=dead\nUnitFileState=disabled\n' "$2" ;;
  is-enabled) echo disabled; exit 1 ;;
  is-active) echo inactive; exit 3 ;;
esac
exit 0
SH
chmod +x "$WORK/systemctl"
if ! /usr/bin/python3 -c 'import apt' 2>/dev/null; then
  echo "installing python3-apt (Ansible's apt module runs on Debian's python3)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-apt >/dev/null; } \
    || fail "cannot install python3-apt with apt"
fi
for plan in udp dpdk; do
  echo "== $plan plan: the playbook on this machine ($([ "$plan" = dpdk ] && echo "prepare and install in check mode, ")start against a systemctl stand-in)"
  local_run=(-i "$WORK/$plan/hosts.yml" deploy/ansible/site.yml -c local -e ansible_become=false
    -e "ansible_python_interpreter=$VENV/bin/python" -e "install_nodes_bin_dir=$(dirname "$JASPER")")
  export JASPER_SYSTEMCTL_LOG="$WORK/$plan.systemctl.log"
  # The roles on the DPDK plan's root, sender and a receiver machine: every
  # task either kind of machine runs (the kernel plan's are a subset).
  # prepare_host's apt tasks need Debian's python3 with its apt bindings.
  if [ "$plan" = dpdk ]; then
    some=$(python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); print(",".join(v[g]["hosts"][0] for g in ["jasper_proxies_level_1", "jasper_sender", "jasper_receivers"]))' "$WORK/$plan.json")
    PATH="$WORK:$PATH" ansible-playbook "${local_run[@]}" --tags prepare --check --limit "$some" \
      -e ansible_python_interpreter=/usr/bin/python3 > "$WORK/$plan.prepare.log" 2>&1 \
      || { cat "$WORK/$plan.prepare.log"; fail "the prepare_host role failed in check mode ($plan plan)"; }
    ansible-playbook "${local_run[@]}" --tags install --check --limit "$some" > "$WORK/$plan.install.log" 2>&1 \
      || { cat "$WORK/$plan.install.log"; fail "the install role failed in check mode ($plan plan)"; }
  fi
  : > "$JASPER_SYSTEMCTL_LOG"
  PATH="$WORK:$PATH" ansible-playbook "${local_run[@]}" --tags start -e jasper_publisher_example=true \
    > "$WORK/$plan.start.log" 2>&1 || { cat "$WORK/$plan.start.log"; fail "the start plays failed ($plan plan)"; }
  python3 - "$JASPER_SYSTEMCTL_LOG" "$WORK/$plan.json" <<'PY'
import json, sys
started = [l.split()[1] for l in open(sys.argv[1]) if l.startswith(("start ", "restart "))]
inv = json.load(open(sys.argv[2]))
order = next(iter(inv["_meta"]["hostvars"].values()))["jasper_start_order"]
units = {n["unit"]: n for n in order}
assert sorted(started) == sorted(units), (started, list(units))
rank = {"receiver": 0, "proxy": 1, "sender": 2}
seen = [(rank[units[u]["role"]], -units[u]["level"]) for u in started]
assert seen == sorted(seen), f"started out of order: {started}"
print(f"   started {len(started)} units in order: {', '.join(u.split('@')[1].split('.')[0] for u in started)}")
PY
done

echo "== ansible-lint (production profile)"
(cd deploy/ansible && ansible-lint --offline --profile production site.yml roles)

echo "== systemd units: systemd-analyze verify"
command -v systemd-analyze >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null \
    || fail "cannot install systemd (systemd-analyze)"
}
U="$WORK/units"
mkdir -p "$U/bin" "$U/root/usr/local/bin" "$U/root/etc/systemd/system"
for b in jasper jasper-proxy jasper-receiver; do
  printf '#!/bin/sh\n' > "$U/bin/$b"
  cp "$U/bin/$b" "$U/root/usr/local/bin/$b"
  chmod 755 "$U/bin/$b" "$U/root/usr/local/bin/$b"
done
for u in proxy receiver publisher; do
  sed "s#/usr/local/bin/#$U/bin/#" "deploy/systemd/jasper-$u@.service" > "$U/jasper-$u@node.service"
  cp "deploy/systemd/jasper-$u@.service" "$U/root/etc/systemd/system/"
done
out=$(systemd-analyze verify "$U"/jasper-*@node.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warned: $out"
mkdir -p "$U/root/etc/systemd/system/jasper-proxy@dpdk.service.d"
cp deploy/systemd/dpdk.conf "$U/root/etc/systemd/system/jasper-proxy@dpdk.service.d/"
echo "== systemd units: systemd-analyze security (exposure, 0 = locked down, 10 = root unconfined)"
# Limits a little above what the units score today, so a loosened sandbox fails here.
for pair in jasper-proxy@node:2.5 jasper-receiver@node:2.5 jasper-publisher@node:2.5 jasper-proxy@dpdk:3.0; do
  name=${pair%%:*}
  limit=${pair#*:}
  line=$(systemd-analyze security --offline=true --root="$U/root" "$name.service" 2>&1 | grep "Overall exposure") \
    || fail "systemd-analyze security gave no exposure for $name"
  score=$(echo "$line" | sed 's/.*: \([0-9.]*\).*/\1/')
  awk -v s="$score" -v t="$limit" 'BEGIN { exit !(s <= t) }' || fail "$name: exposure $score above $limit"
  echo "   $name: exposure $score (limit $limit)"
done

echo "== terraform"
if command -v terraform >/dev/null 2>&1; then
  # A CLI config named but absent only earns warnings: use an empty one.
  if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -e "$TF_CLI_CONFIG_FILE" ]; then
    : > "$WORK/terraformrc"
    export TF_CLI_CONFIG_FILE="$WORK/terraformrc"
  fi
  terraform -chdir=deploy/terraform fmt -check -recursive -diff
  if [ -d /opt/tf-plugins ]; then
    TFDATA="$WORK/tf"
    TF_DATA_DIR="$TFDATA" terraform -chdir=deploy/terraform init -backend=false -input=false \
      -plugin-dir=/opt/tf-plugins >/dev/null
    TF_DATA_DIR="$TFDATA" terraform -chdir=deploy/terraform validate -no-color
    # Offline, against a mocked AWS provider: the inventory output.
    TF_DATA_DIR="$TFDATA" terraform -chdir=deploy/terraform test -no-color
    rm -f deploy/terraform/.terraform.lock.hcl
  else
    echo "   the AWS provider is not on this machine: terraform fmt only, deploy/terraform NOT validated"
  fi
else
  echo "   terraform is not installed here (it is in none of the package registries this machine reaches): deploy/terraform NOT validated"
fi
echo "deploy/check.sh: all checks passed"
