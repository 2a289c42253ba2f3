#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages flowaudit's tests and benchmarks use, only if missing:
#   venv  -> python3-venv (Debian splits venv out of python3)
#   test  -> prometheus (promtool + a real server to scrape the service), softflowd (a real
#            NetFlow exporter), nfdump and tshark (NetFlow ground truth), chromium (renders the
#            audit report headless)
#   bench -> the same, plus nfdump for the peer comparison
set -euo pipefail
what=${1:-test}
pkgs=()
case "$what" in
  venv) pkgs+=(python3-venv) ;;
  test|bench)
    command -v promtool >/dev/null 2>&1 || pkgs+=(prometheus)
    command -v softflowd >/dev/null 2>&1 || pkgs+=(softflowd)
    command -v nfdump >/dev/null 2>&1 || pkgs+=(nfdump)
    command -v tshark >/dev/null 2>&1 || pkgs+=(tshark)
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || pkgs+=(chromium)
    ;;
  *) echo "usage: $0 venv|test|bench" >&2; exit 2 ;;
esac
[ ${#pkgs[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${pkgs[*]}" >&2; exit 2; }
  SUDO=sudo
fi
echo "installing system packages: ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no, non-interactively
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections 2>/dev/null || true
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
