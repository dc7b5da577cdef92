#!/usr/bin/env bash
# Called by run_tests.sh: the headless Chromium and chromedriver that tests/test_site.py drives (Debian's packages
# chromium and chromium-driver). Where either is missing and this runs as root with apt-get (CI, a container), it
# installs them quietly, once; anywhere else it changes nothing, and the test is skipped naming what is missing.
# Never fails the test run. BACKDOOR_REPRO_NO_BROWSER_INSTALL=1 skips the install.
set -uo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
if { have chromium || have chromium-browser || have google-chrome; } && have chromedriver; then
  exit 0
fi
if [[ -n "${BACKDOOR_REPRO_NO_BROWSER_INSTALL:-}" || "$(id -u)" != 0 ]] || ! have apt-get; then
  exit 0
fi
log="$(mktemp "${TMPDIR:-/tmp}/backdoor-repro-chromium-XXXXXX.log")"
echo "Installing chromium and chromium-driver with apt-get for tests/test_site.py (once; log: $log)..." >&2
export DEBIAN_FRONTEND=noninteractive
if apt-get -o DPkg::Lock::Timeout=120 update -qq >"$log" 2>&1 &&
   apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends chromium chromium-driver >>"$log" 2>&1; then
  rm -f "$log"
else
  echo "note: chromium could not be installed (see $log); tests/test_site.py will be skipped" >&2
fi
exit 0
