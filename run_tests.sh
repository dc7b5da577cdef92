#!/usr/bin/env bash
# The whole test suite: unit tests (tests/; tests/test_site.py opens the HTML site in headless Chromium) and nbval
# over the executed smoke notebooks.
# Re-executed notebooks write into a temporary folder, never into the committed figures/ and tables/.
set -euo pipefail
caller_dir="$PWD"  # relative BACKDOOR_REPRO_OUTPUT / _CACHE are taken from here (scripts/ensure_env.sh)
cd "$(dirname "$0")"
source scripts/ensure_env.sh
scripts/ensure_test_tools.sh  # Chromium (tests/test_site.py), pdflatex + booktabs (tests/test_table_files.py): installed where it can (root, apt)
export MPLBACKEND=Agg
exec "$PYTHON" -m pytest "$@"
