#!/usr/bin/env bash
# Installs virt-customize (Debian libguestfs-tools) for `make bench`.
# qemu-system-x86 comes from bookworm-backports (see install-qemu-system.sh).
# libguestfs boots its appliance with the host kernel, so one is installed
# in /boot (linux-image-amd64).
set -euo pipefail
if command -v virt-customize >/dev/null && ls /boot/vmlinuz-* >/dev/null 2>&1; then
  exit 0
fi
"$(dirname "$0")/install-qemu-system.sh" libguestfs-tools linux-image-amd64
