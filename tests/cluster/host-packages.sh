#!/usr/bin/env bash
# Installs the Debian packages the real node (runc, CNI plugins, iptables, conntrack; build.sh builds its
# containerd from containerd's Go module) and the image builds (debootstrap, buildah, busybox-static)
# need, and the headless Chromium the dashboard's browser tests drive (tests/browser). Idempotent:
# quick when all are there.
# Not root: says what is missing and exits 0, since the simulated cluster works without them.
set -euo pipefail

packages=(
  runc containernetworking-plugins iptables conntrack
  busybox-static
  debootstrap buildah
  chromium
)

log() { printf '[host-packages] %s\n' "$*" >&2; }

missing=()
for package in "${packages[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
    missing+=("$package")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then exit 0; fi

if ! command -v apt-get >/dev/null; then
  log "No apt-get here; the real node needs: ${missing[*]}"
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  log "Not root; the real node needs: ${missing[*]} (apt-get install them as root)"
  exit 0
fi

log "Installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Others may run apt at the same time: wait for dpkg's lock rather than fail.
apt_options=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold -y -q)
# A fresh machine has no (or stale) package lists: one update, then retry only if needed.
if ! apt-get "${apt_options[@]}" install "${missing[@]}" >/dev/null; then
  apt-get "${apt_options[@]}" update >/dev/null
  apt-get "${apt_options[@]}" install "${missing[@]}" >/dev/null
fi
