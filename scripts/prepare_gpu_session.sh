#!/usr/bin/env bash
# Stage what an offline GPU machine needs for scripts/gpu_session.py into .device/ (ignored by git; carry it):
#   .device/wheels/*.whl          the Jupyter stack (papermill, nbformat, ipykernel, ...) for its Python
#   .device/cifar10-jpeg.tar.gz   full CIFAR-10 (JPEG re-encoded), unpacked there by the session
#   .device/COMMIT                this checkout's commit (the copy sent there has no .git)
# Usage: scripts/prepare_gpu_session.sh [SHARED_DIR]   (default ../shared: wheels-py312/ and data/)
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${1:-../shared}"
wheels="$shared/wheels-py312"; archive="$shared/data/cifar10-jpeg.tar.gz"
[[ -d "$wheels" ]] || { echo "error: no wheel folder $wheels (pass the folder holding wheels-py312/ and data/)" >&2; exit 2; }
[[ -f "$archive" ]] || { echo "error: no CIFAR-10 archive $archive" >&2; exit 2; }
git check-ignore -q .device/x || { echo "error: .device/ is not ignored by git here; it must never be committed" >&2; exit 2; }
mkdir -p .device/wheels
rm -f .device/wheels/*.whl
cp "$wheels"/*.whl .device/wheels/
cp -f "$archive" .device/cifar10-jpeg.tar.gz
# submitit (the grid CLI's local and SLURM executors; the notebooks run cells inline) is not on the lent machines'
# image: fetch its pure-Python wheel where an index is reachable, else go on without it
python3 -m pip download -q --no-deps --only-binary=:all: -d .device/wheels 'submitit>=1.5' >/dev/null 2>&1 ||
  echo "note: no submitit wheel (no package index here): 'python -m backdoor_repro.orchestration.grid --executor local' will not run there" >&2
commit="$(git rev-parse --short=12 HEAD)"
[[ -z "$(git status --porcelain -- lib scripts notebooks run_all.sh)" ]] || commit="$commit+dirty"
echo "$commit" > .device/COMMIT
size=$(du -sm .device | cut -f1)
echo "staged .device/ ($size MiB: $(ls .device/wheels | wc -l) wheels, the CIFAR-10 archive, commit $commit)"
echo "on the GPU machine (device tool): command 'python3 scripts/gpu_session.py', carry ['.device'], timeout_s 600"
