#!/usr/bin/env bash
# Installs Debian's chromium, which the web inbox's browser test
# (cmd/agentauth TestApprovalInbox, chromedp) drives headless. Idempotent:
# exits at once when /usr/bin/chromium is there. Runs as root, or with
# sudo otherwise.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
	exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
	as_root=()
elif command -v sudo >/dev/null 2>&1; then
	as_root=(sudo)
else
	echo "install-chromium: /usr/bin/chromium is missing and this is not root (no sudo either); install the Debian package 'chromium' as root" >&2
	exit 1
fi

echo "install-chromium: installing Debian's chromium for the web inbox's browser test" >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

if [ ! -x /usr/bin/chromium ]; then
	echo "install-chromium: the chromium package is installed but /usr/bin/chromium is not there" >&2
	exit 1
fi
