#!/usr/bin/env bash
# Makes the demo's bootable base with bakehouse itself: builds
# recipes/debian-bootable.yaml (builder.disk on the mmdebstrap tree) in a
# throwaway home and keeps its qcow2 as $1. Usage: make-demo-base.sh OUT BAKEHOUSE
set -euo pipefail
out=$1 bakehouse=$2
home=$(dirname "$out")/.make-bootable
rm -rf "$home"
trap 'rm -rf "$home"' EXIT
"$bakehouse" --db "$home/registry.db" build --home "$home" recipes/debian-bootable.yaml >/dev/null
disk=$(find "$home/images" -name debian-bootable.qcow2 -print -quit)
[ -n "$disk" ] || { echo "make-demo-base: the build left no qcow2" >&2; exit 1; }
cp "$disk" "$out.tmp"
mv "$out.tmp" "$out"
