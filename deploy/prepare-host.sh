#!/usr/bin/env bash
# Prepare one cloud VM (Debian 12 / Ubuntu 22.04+) to run a Jasper node by
# hand; deploy/ansible's prepare_host role does the same for a whole plan.
#   sudo ./prepare-host.sh [--dpdk] [--hugepages N]
# - creates the service user `jasper` the units run as (deploy/systemd),
# - raises UDP socket buffer limits (the kernel backend asks for 4 MiB),
# - installs chrony and makes sure the clock is disciplined (the receivers'
#   deadlines are in synchronized time; an unsynchronized clock shows up as
#   status "unsynchronized" in every node's counters),
# - with --dpdk: installs DPDK, reserves hugepages and loads vfio-pci.
set -euo pipefail
DPDK=0
HUGEPAGES=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --dpdk) DPDK=1 ;;
    --hugepages) HUGEPAGES="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo)" >&2; exit 1; }

id jasper >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
  --home-dir /nonexistent --shell /usr/sbin/nologin jasper

cat > /etc/sysctl.d/60-jasper.conf <<CONF
net.core.rmem_max = 33554432
net.core.wmem_max = 33554432
net.core.rmem_default = 4194304
net.core.wmem_default = 4194304
net.core.netdev_max_backlog = 100000
CONF
sysctl --system >/dev/null

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chrony >/dev/null
# Prefer the cloud's PTP/NTP source when present (AWS: 169.254.169.123 and /dev/ptp0).
if ! grep -q "jasper" /etc/chrony/chrony.conf; then
  {
    echo "# jasper: cloud time sources"
    echo "server 169.254.169.123 prefer iburst minpoll 4 maxpoll 4"
    [ -e /dev/ptp0 ] && echo "refclock PHC /dev/ptp0 poll 0 delay 0.000010 prefer"
  } >> /etc/chrony/chrony.conf
  systemctl restart chrony
fi
chronyc tracking | sed -n '1,6p'

if [ "$DPDK" -eq 1 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdpdk-dev dpdk pkg-config clang libclang-dev >/dev/null
  echo "$HUGEPAGES" > /proc/sys/vm/nr_hugepages
  echo "vm.nr_hugepages = $HUGEPAGES" > /etc/sysctl.d/61-jasper-hugepages.conf
  modprobe vfio-pci || true
  # The VFIO devices belong to the service user's group (deploy/systemd/dpdk.conf).
  echo 'SUBSYSTEM=="vfio", GROUP="jasper", MODE="0660"' > /etc/udev/rules.d/90-jasper-vfio.rules
  udevadm control --reload-rules || true
  echo "DPDK ready: bind the data NIC with"
  echo "  dpdk-devbind.py --bind=vfio-pci <PCI address>   (keep the management NIC on the kernel)"
  echo "then give the node its own settings in the inventory, e.g."
  echo "  dpdk = { lcores = \"1\", pci = \"<PCI address>\" }   (jasper plan --backend dpdk writes its eal_args)"
fi
echo "host prepared"
