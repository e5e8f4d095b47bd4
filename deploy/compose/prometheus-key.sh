#!/bin/sh
# Makes the invoke API key Prometheus scrapes with, once, and writes it to $KEY_FILE.
#
# compose.yaml runs this in node1's network namespace (network_mode: service:node1), where node1's
# HTTP port is loopback, which needs no key (docs/security.md). The key is kept by every node (its
# digest is gossiped), so a later run finds the file and does nothing; delete the file (or the
# prometheus-key volume) to make a new one, and revoke the old one with `meshnode keys revoke ID`.
set -eu
: "${KEY_FILE:?KEY_FILE names the file to write}"
if [ -s "$KEY_FILE" ]; then
  echo "prometheus-key: $KEY_FILE exists; keeping it"
  exit 0
fi
umask 022  # Prometheus reads it as another user (nobody)
meshnode keys create --scope invoke --name prometheus --node http://127.0.0.1:8470 > "$KEY_FILE.new"
mv "$KEY_FILE.new" "$KEY_FILE"
echo "prometheus-key: wrote $KEY_FILE"
