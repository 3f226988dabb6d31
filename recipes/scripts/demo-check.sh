#!/bin/sh
# Runs inside the demo image after the earlier provisioners: checks their
# work and records a small build note.
set -eu
command -v jq >/dev/null 2>&1 || { echo "demo-check: jq is not installed" >&2; exit 1; }
grep -q bakehouse /etc/motd || { echo "demo-check: /etc/motd was not installed" >&2; exit 1; }
mkdir -p /etc/bakehouse
printf '{"recipe": "demo"}\n' | jq . > /etc/bakehouse/demo.json
echo "demo-check: ok"
