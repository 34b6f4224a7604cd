#!/usr/bin/env bash
# promtool, for `promtool check rules` and `promtool test rules` on alerts.yml (tests/code/test_compose.py):
# the binary from Debian's prometheus package, extracted without installing the package (no service,
# user or unit is created, nothing is started). Usage: install-promtool.sh [target folder, default /usr/local/bin]
set -euo pipefail
target="${1:-/usr/local/bin}"
if command -v promtool >/dev/null; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
download() { (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1); }
download || { apt-get update -qq && download; }
dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$target/promtool"
chmod +x "$target/promtool"
"$target/promtool" --version | head -n1
