#!/usr/bin/env bash
# Builds GuestVault (release) and runs the demo on a temporary vault.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"
scripts/deps.sh
swift build -c release --product guestvault
.build/release/guestvault demo "$@"
