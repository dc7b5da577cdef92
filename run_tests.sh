#!/usr/bin/env bash
# The whole test suite: unit tests (tests/; tests/test_site.py opens the HTML site in headless Chromium) and nbval
# over the executed smoke notebooks.
# Re-executed notebooks write into a temporary folder, never into the committed figures/ and tables/.
set -euo pipefail
caller_dir="$PWD"  # relative BACKDOOR_REPRO_OUTPUT / _CACHE are taken from here (scripts/ensure_env.sh)
cd "$(dirname "$0")"
source scripts/ensure_env.sh
scripts/ensure_browser.sh  # the headless Chromium of tests/test_site.py, installed where it can be (root, apt-get)
export MPLBACKEND=Agg
exec "$PYTHON" -m pytest "$@"
