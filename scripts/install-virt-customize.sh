#!/usr/bin/env bash
# Installs virt-customize (Debian libguestfs-tools) for `make bench`.
# qemu-system-x86 must come from bookworm-backports, because the machine's
# qemu-utils already is the backports version; the backports source lives in
# a private directory so the system's apt sources are left as they are.
# libguestfs boots its appliance with the host kernel, so one is installed
# in /boot (linux-image-amd64).
set -euo pipefail
if command -v virt-customize >/dev/null && ls /boot/vmlinuz-* >/dev/null 2>&1; then
  exit 0
fi
parts=$(mktemp -d)
trap 'rm -rf "$parts"' EXIT
cp /etc/apt/sources.list.d/*.sources "$parts"/ 2>/dev/null || true
cat >"$parts/bookworm-backports.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
apt() { apt-get -o Dir::Etc::SourceParts="$parts" "$@"; }
echo "installing libguestfs-tools, qemu-system-x86 (bookworm-backports) and a kernel"
apt update -qq
DEBIAN_FRONTEND=noninteractive apt install -y -qq --no-install-recommends \
  libguestfs-tools linux-image-amd64 \
  qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
  qemu-system-data/bookworm-backports seabios/bookworm-backports >/dev/null
