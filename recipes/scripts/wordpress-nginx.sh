#!/bin/sh
# Installs nginx for WordPress (used by packer-example.json).
set -eu
if command -v dnf >/dev/null 2>&1; then
  dnf install -y nginx
elif command -v yum >/dev/null 2>&1; then
  yum install -y nginx
else
  apt-get update && apt-get install -y --no-install-recommends nginx
fi
mkdir -p /opt/packer/nginx
