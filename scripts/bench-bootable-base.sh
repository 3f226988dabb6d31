#!/usr/bin/env bash
# Benchmark (part of `make bench`): a bootable Debian bookworm image made
# from Debian packages, measured once each in the same run:
#   bakehouse          scripts/make-boot-tree.sh (mmdebstrap) and a build of
#                      recipes/debian-bootable.yaml (builder.disk: GPT, GRUB)
#                      without its test boot
#   diskimage-builder  disk-image-create debian-minimal, without the `vm`
#                      element: `vm` partitions the disk with kpartx, which
#                      needs device-mapper, and these machines' kernels have
#                      none ("device mapper prerequisites not met"). So DIB
#                      makes a filesystem image with a kernel but no
#                      partition table or bootloader: less work than
#                      bakehouse does, and the ratio favours DIB.
# Usage: bench-bootable-base.sh BAKEHOUSE (run from the repository root).
set -euo pipefail
bakehouse=$(realpath "$1")
work=$(mktemp -d "$PWD/.bakehouse/bench-bootable.XXXXXX")
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
t0=$(now)
scripts/make-boot-tree.sh "$work/tree.tar.zst"
t1=$(now)
# The recipe without its `test:` (a boot under TCG, ~45 s here): DIB tests
# nothing either.
sed -e 's#path: .*bookworm-boot.tar.zst#path: tree.tar.zst#' -e '/^test:/,$d' \
  recipes/debian-bootable.yaml >"$work/debian-bootable.yaml"
"$bakehouse" -q --db "$work/home/registry.db" build --home "$work/home" "$work/debian-bootable.yaml" >/dev/null
t2=$(now)
disk=$(find "$work/home/images" -name debian-bootable.qcow2 -print -quit)
[ -n "$disk" ] || { echo "bench-bootable-base: the build left no qcow2" >&2; exit 1; }
rm -rf "$work/home"
t3=$(now)
DIB_RELEASE=bookworm DIB_DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security \
  DIB_IMAGE_CACHE="$work/dib-cache" TMPDIR="$work" disk-image-create -o "$work/dib" debian-minimal >"$work/dib.log" 2>&1 \
  || { tail -20 "$work/dib.log" >&2; exit 1; }
t4=$(now)
[ -s "$work/dib.qcow2" ] || { echo "bench-bootable-base: diskimage-builder left no image" >&2; exit 1; }
awk -v t0="$t0" -v t1="$t1" -v t2="$t2" -v t3="$t3" -v t4="$t4" 'BEGIN {
  tree = t1 - t0; build = t2 - t1; dib = t4 - t3
  printf "bootable Debian bookworm image from Debian packages (one run each)\n"
  printf "  %-46s %9.1f s\n", "bakehouse: mmdebstrap + builder.disk, no test", tree + build
  printf "  %-46s %9.1f s\n", "  of which mmdebstrap", tree
  printf "  %-46s %9.1f s\n", "diskimage-builder debian-minimal (no vm element)", dib
  printf "  %-46s %9.2f x (target <= 0.5)\n", "ratio bakehouse / diskimage-builder", (tree + build) / dib
}'
