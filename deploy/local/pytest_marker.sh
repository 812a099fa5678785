#!/usr/bin/env bash
# Run the tests carrying one pytest marker (`just test-proxy` etc.). A marker whose tests do not exist yet
# makes pytest exit 5 ("no tests collected"): that is reported plainly and is not a failure.
# Usage: pytest_marker.sh MARKER [pytest args...]; the Python is $MHP_PYTHON (default .venv/bin/python).
set -uo pipefail

marker="$1"
shift
python="${MHP_PYTHON:-.venv/bin/python}"

"$python" -m pytest -m "$marker" "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "no tests marked '$marker' yet (pytest selected nothing, exit 5): treated as success"
    exit 0
fi
exit "$status"
