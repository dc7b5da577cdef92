#!/usr/bin/env bash
# Called by run_tests.sh: the system tools two tests need, from Debian's packages: the headless Chromium and its
# driver that tests/test_site.py drives (chromium, chromium-driver), and pdflatex with booktabs, which
# tests/test_table_files.py compiles every committed table with (texlive-latex-base, texlive-latex-recommended).
# Where one is missing and this runs as root with apt-get (CI, a container), it installs the missing packages quietly,
# once; anywhere else it changes nothing, and those tests are skipped naming what is missing.
# Never fails the test run. BACKDOOR_REPRO_NO_TOOL_INSTALL=1 skips the install.
set -uo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
missing=()
{ have chromium || have chromium-browser || have google-chrome; } && have chromedriver || missing+=(chromium chromium-driver)
have pdflatex || missing+=(texlive-latex-base)
{ have kpsewhich && [[ -n "$(kpsewhich booktabs.sty 2>/dev/null)" ]]; } || missing+=(texlive-latex-recommended)
if [[ ${#missing[@]} -eq 0 || -n "${BACKDOOR_REPRO_NO_TOOL_INSTALL:-}" || "$(id -u)" != 0 ]] || ! have apt-get; then
  exit 0
fi
log="$(mktemp "${TMPDIR:-/tmp}/backdoor-repro-tools-XXXXXX.log")"
echo "Installing ${missing[*]} with apt-get for the browser and LaTeX tests (once; log: $log)..." >&2
export DEBIAN_FRONTEND=noninteractive
if apt-get -o DPkg::Lock::Timeout=120 update -qq >"$log" 2>&1 &&
   apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
  rm -f "$log"
else
  echo "note: ${missing[*]} could not be installed (see $log); tests/test_site.py or the LaTeX table test will be skipped" >&2
fi
exit 0
