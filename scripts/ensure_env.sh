#!/usr/bin/env bash
# Sourced by run_all.sh and run_tests.sh: sets PYTHON to an interpreter that has this package and its
# notebook/test dependencies. Uses, in order: $BACKDOOR_REPRO_PYTHON; the active conda env or virtualenv
# if it already has them (e.g. after `conda env create -f environment.yml`); else a local .venv that it
# creates and keeps up to date with pyproject.toml. Also makes BACKDOOR_REPRO_OUTPUT and BACKDOOR_REPRO_CACHE
# absolute (relative to $caller_dir when the sourcing script set it, else to the current folder) before anything
# starts, since kernels run in notebooks/; and exports the CPU numerics settings (lib/backdoor_repro/numerics.py).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for var in BACKDOOR_REPRO_OUTPUT BACKDOOR_REPRO_CACHE; do
  [[ -z "${!var:-}" || "${!var}" = /* ]] || export "$var=${caller_dir:-$PWD}/${!var}"
done
has_deps() { "$1" -c "import backdoor_repro, papermill, nbval, ipykernel" >/dev/null 2>&1; }

if [[ -n "${BACKDOOR_REPRO_PYTHON:-}" ]]; then
  PYTHON="$BACKDOOR_REPRO_PYTHON"
elif [[ -n "${CONDA_PREFIX:-}${VIRTUAL_ENV:-}" ]] && has_deps python; then
  PYTHON="$(command -v python)"
else
  venv="$repo_root/.venv"
  stamp="$venv/.installed-$(sha256sum "$repo_root/pyproject.toml" | cut -c1-16)"
  if [[ ! -f "$stamp" ]]; then
    base_python="${PYTHON_FOR_VENV:-$(command -v python3.11 || command -v python3)}"
    echo "Setting up $venv with $("$base_python" --version) (first run only; torch is large)..." >&2
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then  # absent, or a half-made venv without pip
      rm -rf "$venv"
      "$base_python" -m venv "$venv" || { echo "error: '$base_python -m venv' failed (on Debian/Ubuntu: apt install python3-venv)" >&2; exit 1; }
    fi
    "$venv/bin/python" -m pip install --quiet -e "$repo_root[test]"
    rm -f "$venv"/.installed-*
    touch "$stamp"
  fi
  PYTHON="$venv/bin/python"
fi
export PYTHON

# `package_module NAME ARGS...`: NAME's main(ARGS) (NAME: a module path under the package, dotted) from the package's folder, as a script, without importing the
# package (which imports torch: 5 s per call); exits with its status
package_module() {
  "$PYTHON" - "$@" <<'PY'
import importlib.util, os, sys
name, args = sys.argv[1], sys.argv[2:]
package = importlib.util.find_spec("backdoor_repro")  # finds the package without running its __init__
spec = importlib.util.spec_from_file_location(  # NAME may be dotted: orchestration.notebook_params
    "backdoor_repro_" + name.replace(".", "_"), os.path.join(package.submodule_search_locations[0], *name.split(".")) + ".py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.exit(module.main(args))
PY
}
# the same CPU kernels on every x86-64 machine with AVX2, and OpenMP threads that sleep when idle; values already
# set win (numerics.shell_exports)
exports="$(package_module numerics)"
eval "$exports"
