#!/usr/bin/env bash
# The whole test suite: unit tests (tests/) and nbval over the executed smoke notebooks.
# Re-executed notebooks write into a temporary folder, never into the committed figures/ and tables/.
set -euo pipefail
caller_dir="$PWD"  # relative BACKDOOR_REPRO_OUTPUT / _CACHE are taken from here (scripts/ensure_env.sh)
cd "$(dirname "$0")"
source scripts/ensure_env.sh
export MPLBACKEND=Agg
exec "$PYTHON" -m pytest "$@"
