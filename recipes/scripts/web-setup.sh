#!/bin/sh
# Enables nginx at boot and removes the default site's leftovers.
set -eu
systemctl enable nginx
rm -f /var/www/html/index.nginx-debian.html
mkdir -p /etc/bakehouse
echo "web" > /etc/bakehouse/recipe
