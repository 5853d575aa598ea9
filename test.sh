#!/usr/bin/env bash
# The test suite: what CI runs. Needs Go (modules come from the proxy) and
# Debian's chromium for the web inbox's browser test, installed here if missing.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-chromium.sh
go vet ./...
go test -race -count=1 -timeout 12m ./...
