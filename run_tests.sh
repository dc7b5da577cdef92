#!/usr/bin/env bash
# The whole test suite: unit tests (tests/) and nbval over the executed smoke notebooks.
# Re-executed notebooks write into a temporary folder, never into the committed figures/ and tables/.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
export MPLBACKEND=Agg
exec "$PYTHON" -m pytest "$@"
