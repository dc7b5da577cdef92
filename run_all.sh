#!/usr/bin/env bash
# Rebuild every figure and table: papermill over the notebooks with one profile.
#   ./run_all.sh                          smoke profile (CPU, bundled data), every notebook
#   ./run_all.sh --profile fast --data-root /data/cifar10-jpeg
#   ./run_all.sh --profile paper --download --only attacks,dbd
set -euo pipefail
caller_dir="$PWD"
cd "$(dirname "$0")"

ORDER=(attacks dbd trap_and_replace fct fmp grid)  # the order notebooks run in; missing ones are skipped
profile=smoke; only=""; data_root=""; download=False; device=auto; dataset=""; attacks=""

usage() {
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'TXT'
Options:
  --profile smoke|fast|paper   run profile (default smoke; fast and paper need a CUDA GPU)
  --only a,b                   run only these notebooks (see --list)
  --data-root DIR              torchvision root or image-folder tree (train/<class>/, test/<class>/)
  --dataset cifar10|cifar100|gtsrb   the dataset of a fast/paper run (default: the profile's, CIFAR-10)
  --download                   allow torchvision to download the dataset
  --attacks a,b                a slice: only these of each notebook's attacks (and the sections that use them);
                               partial tables, marked in each notebook's <name>_run.json
  --device auto|cpu|cuda       default auto
  --list                       list the notebooks and exit
Executed notebooks go to notebooks/executed/<profile>[-<dataset>]/, figures to figures/<profile>[-<dataset>]/,
tables to tables/<profile>[-<dataset>]/.
TXT
}

available() { for n in "${ORDER[@]}"; do [[ -f "notebooks/$n.ipynb" ]] && echo "$n"; done; return 0; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
    --only) only="${2:?--only needs a value}"; shift 2 ;;
    --data-root) data_root="${2:?--data-root needs a value}"; [[ "$data_root" = /* ]] || data_root="$caller_dir/$data_root"; shift 2 ;;
    --download) download=True; shift ;;
    --dataset) dataset="${2:?--dataset needs a value}"; shift 2 ;;
    --attacks) attacks="${2:?--attacks needs a value}"; shift 2 ;;
    --device) device="${2:?--device needs a value}"; shift 2 ;;
    --list) available; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

mapfile -t notebooks < <(available)
if [[ -n "$only" ]]; then
  IFS=',' read -r -a wanted <<<"$only"
  chosen=()
  for n in "${wanted[@]}"; do
    [[ " ${notebooks[*]} " == *" $n "* ]] || { echo "error: unknown notebook '$n'; available: ${notebooks[*]}" >&2; exit 2; }
    [[ " ${chosen[*]-} " == *" $n "* ]] || chosen+=("$n")  # a notebook named twice runs once
  done
  notebooks=("${chosen[@]}")
fi
if [[ -n "$data_root" && ! -d "$data_root" ]]; then
  echo "error: --data-root $data_root is not a directory" >&2; exit 2
fi

echo "notebooks: ${notebooks[*]} ($profile)"
source scripts/ensure_env.sh
preflight=(--profile "$profile" --device "$device")
[[ -n "$data_root" ]] && preflight+=(--data-root "$data_root")
[[ "$download" == True ]] && preflight+=(--download)
[[ -n "$dataset" ]] && preflight+=(--dataset "$dataset")
[[ -n "$attacks" ]] && preflight+=(--attacks "$attacks")
"$PYTHON" -m backdoor_repro.preflight "${preflight[@]}"

run_name="$profile${dataset:+-$dataset}"
out="notebooks/executed/$run_name"
mkdir -p "$out"
params=(-p profile "$profile" -p device "$device" -p download "$download")
[[ -n "$data_root" ]] && params+=(-p data_root "$(cd "$data_root" && pwd)")
[[ -n "$dataset" ]] && params+=(-p dataset "$dataset")
[[ -n "$attacks" ]] && params+=(-p attacks "$attacks")
export MPLBACKEND=Agg
final_root="${BACKDOOR_REPRO_OUTPUT:-$PWD}"
mkdir -p "$final_root"
# a notebook writes its tables and figures into a staging folder; they replace the previous ones only once the
# notebook has passed, so a failed or killed run never leaves new outputs beside old ones
publish() {
  local kind f
  for kind in figures tables; do
    [[ -d "$1/$kind" ]] || continue
    while IFS= read -r f; do
      mkdir -p "$final_root/$(dirname "$f")"; mv -f "$1/$f" "$final_root/$f"
    done < <(cd "$1" && find "$kind" -type f)
  done
}
for n in "${notebooks[@]}"; do
  echo "== $n ($profile)"
  start=$SECONDS
  tmp="$out/.$n.running.ipynb"
  staging="$(mktemp -d "$final_root/.staging-$n-XXXXXX")"
  if BACKDOOR_REPRO_OUTPUT="$staging" "$PYTHON" -m papermill "notebooks/$n.ipynb" "$tmp" "${params[@]}" --cwd notebooks \
       -k python3 --log-level WARNING; then
    publish "$staging"; rm -rf "$staging"
    mv "$tmp" "$out/$n.ipynb"
    echo "   done in $((SECONDS - start)) s -> $out/$n.ipynb"
  else
    rm -rf "$staging"
    mkdir -p "$out/failed"; mv "$tmp" "$out/failed/$n.ipynb" 2>/dev/null || true
    echo "error: notebook '$n' failed (profile $profile); the executed copy with the traceback is $out/failed/$n.ipynb;" \
         "its tables and figures were not published" >&2
    exit 1
  fi
done
echo "All done: ${notebooks[*]} ($profile)."
