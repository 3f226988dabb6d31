#!/usr/bin/env bash
# The bootable tree: Debian bookworm minbase plus the cloud kernel,
# initramfs-tools, udev, systemd and GRUB for BIOS (grub-pc-bin), from
# Debian packages only, as a .tar.zst at $1. builder.disk turns it into a
# bootable disk (recipes/debian-bootable.yaml). Usage: make-boot-tree.sh OUT
set -euo pipefail
out=$1
mkdir -p "$(dirname "$out")"
mmdebstrap --quiet --variant=minbase \
  --include=linux-image-cloud-amd64,initramfs-tools,udev,systemd-sysv,grub-pc-bin,zstd \
  --format=tar bookworm - /etc/apt/sources.list.d/debian.sources </dev/null \
  | zstd -q -T0 -o "$out.tmp"
mv "$out.tmp" "$out"
