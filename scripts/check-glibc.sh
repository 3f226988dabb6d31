#!/usr/bin/env bash
# Usage: check-glibc.sh MAX BINARY...
# Fails if a binary needs a glibc symbol version newer than MAX (e.g. 2.34,
# what the provided.al2023 Lambda runtime has). Binaries are read from their
# zip when only the zip exists.
set -euo pipefail
max=$1; shift
status=0
for bin in "$@"; do
  if [ ! -f "$bin" ] && [ -f "$(dirname "$bin")/bootstrap.zip" ]; then
    tmp=$(mktemp -d); unzip -q -o "$(dirname "$bin")/bootstrap.zip" -d "$tmp"; bin_read="$tmp/bootstrap"
  else
    bin_read=$bin
  fi
  need=$(objdump -T "$bin_read" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
  size=$(stat -c %s "$(dirname "$bin")/bootstrap.zip" 2>/dev/null || echo 0)
  if [ "$(printf '%s\n%s\n' "$need" "$max" | sort -V | tail -n 1)" != "$max" ]; then
    echo "FAIL $bin needs GLIBC_$need (> $max)"; status=1
  else
    echo "ok   $bin needs GLIBC_${need:-none} (<= $max); zip $size bytes"
  fi
done
exit $status
