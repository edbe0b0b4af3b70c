#!/usr/bin/env bash
# Validate the alert rules: syntax and expressions (promtool check rules),
# then behaviour (promtool test rules: each alert fires on the series that
# should trip it and stays quiet otherwise). Installs promtool (Debian's
# `prometheus` package) when missing.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v promtool >/dev/null 2>&1; then
  echo "== installing promtool (Debian package prometheus)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool check rules jasper-alerts.yml
promtool check config prometheus.yml
promtool test rules jasper-alerts.test.yml
