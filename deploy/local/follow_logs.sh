#!/usr/bin/env bash
# `just logs`: follow the combined log `just up` writes (survives the file being created later or rotated).
set -euo pipefail
log="${MHP_STATE_DIR:-.data}/logs/combined.log"
mkdir -p "$(dirname "$log")"
touch "$log"
exec tail -n 200 -F "$log"
