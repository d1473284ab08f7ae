#!/usr/bin/env bash
# Debian libraries that open3d needs to import (libusb) and to render offscreen on the CPU
# (Vulkan through Mesa's lavapipe). Installs only what is missing; a no-op when all are there.
set -euo pipefail
missing=()
for pkg in libusb-1.0-0 libvulkan1 mesa-vulkan-drivers; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "setup_system: please install ${missing[*]} with your system's package manager" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup_system: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
