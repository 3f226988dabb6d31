#!/usr/bin/env bash
# Installs qemu-system-x86 (boot tests, virt-customize) together with
# qemu-utils, both from bookworm-backports: the machine's preinstalled
# qemu-utils is the backports version, and bookworm's qemu-system-x86 would
# replace it (qemu-img disappears). The backports source lives in a private
# directory so the system's apt sources are left as they are. Extra package
# names given as arguments are installed in the same run.
set -euo pipefail
want_bpo() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null | grep -q bpo; }
missing=()
for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if want_bpo qemu-utils && want_bpo qemu-system-x86 && [ ${#missing[@]} -eq 0 ]; then
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
echo "installing qemu-system-x86 and qemu-utils (bookworm-backports) ${missing[*]}"
apt update -qq
DEBIAN_FRONTEND=noninteractive apt install -y -qq --no-install-recommends --allow-downgrades \
  qemu-utils/bookworm-backports qemu-system-x86/bookworm-backports \
  qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports \
  qemu-block-extra/bookworm-backports seabios/bookworm-backports "${missing[@]}" >/dev/null
qemu-img --version | head -1
qemu-system-x86_64 --version | head -1
