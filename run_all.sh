#!/usr/bin/env bash
# Rebuild every figure and table: papermill over the notebooks with one profile.
#   ./run_all.sh                          smoke profile (CPU, bundled data), every notebook
#   ./run_all.sh --profile fast --data-root /data/cifar10-jpeg
#   ./run_all.sh --profile paper --download --only attacks,dbd
#   ./run_all.sh --profile fast --dry-run  every fast-profile code path, a couple of steps per stage, outputs in a temp folder
set -euo pipefail
caller_dir="$PWD"  # paths given on the command line or in BACKDOOR_REPRO_OUTPUT / _CACHE are relative to it
cd "$(dirname "$0")"
absolute() { if [[ "$1" = /* ]]; then echo "$1"; else echo "$caller_dir/$1"; fi; }

ORDER=(attacks dbd trap_and_replace fct fmp grid)  # the order notebooks run in; missing ones are skipped
profile=smoke; only=""; data_root=""; download=False; device=auto; dataset=""; attacks=""; dry_run=False; max_minutes=""

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'TXT'
Options:
  --profile smoke|cpu|fast|paper   run profile (default smoke; cpu: full CIFAR-10 on CPU cores, hours;
                               fast and paper need a CUDA GPU)
  --only a,b                   run only these notebooks (see --list)
  --data-root DIR              torchvision root or image-folder tree (train/<class>/, test/<class>/)
  --dataset cifar10|cifar100|gtsrb|imagenet12   the dataset of a fast/paper run (default: the profile's, CIFAR-10)
  --download                   allow torchvision to download the dataset
  --attacks a,b                a slice: only these of each notebook's attacks (and the sections that use them);
                               partial tables, marked in each notebook's <name>_run.json
  --device auto|cpu|cuda|cuda:N   default auto
  --max-minutes N              stop cleanly after about N minutes (right after a checkpoint, or between stages and
                               notebooks) and exit with status 75; rerun the same command to continue from there
  --dry-run                    cpu / fast / paper: every notebook with that profile's configs and code paths, each stage
                               cut to a couple of steps on 100 bundled images (CPU is fine); checks that everything runs
                               and every output is written. With --dataset gtsrb|cifar100|imagenet12: on a small copy in
                               that dataset's layout, written from the bundled images and read by its loader. Outputs,
                               executed notebooks and the cache go to a temporary
                               folder ($BACKDOOR_REPRO_OUTPUT if set), never into tables/<profile>
  --list                       list the notebooks and exit
Executed notebooks go to notebooks/executed/<profile>[-<dataset>]/, figures to figures/<profile>[-<dataset>]/,
tables to tables/<profile>[-<dataset>]/ (under $BACKDOOR_REPRO_OUTPUT if set), and then the HTML site of all of them
(results matrix, notebooks, tables, figures) to site/<profile>[-<dataset>]/index.html (not committed). A line per
stage and per epoch shows the progress, with the time left. One run at a time per output folder.
TXT
}

available() { for n in "${ORDER[@]}"; do [[ -f "notebooks/$n.ipynb" ]] && echo "$n"; done; return 0; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
    --only) only="${2:?--only needs a value}"; shift 2 ;;
    --data-root) data_root="$(absolute "${2:?--data-root needs a value}")"; shift 2 ;;
    --download) download=True; shift ;;
    --dataset) dataset="${2:?--dataset needs a value}"; shift 2 ;;
    --attacks) attacks="${2:?--attacks needs a value}"; shift 2 ;;
    --device) device="${2:?--device needs a value}"; shift 2 ;;
    --dry-run) dry_run=True; shift ;;
    --max-minutes) max_minutes="${2:?--max-minutes needs a value}"; shift 2 ;;
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

if [[ -n "$max_minutes" ]]; then
  [[ "$max_minutes" =~ ^[0-9]+$ ]] && (( 10#$max_minutes > 0 )) || { echo "error: --max-minutes must be a positive whole number of minutes, got '$max_minutes'" >&2; exit 2; }
  export BACKDOOR_REPRO_DEADLINE=$(( $(date +%s) + 60 * 10#$max_minutes ))
  budget="the --max-minutes $max_minutes budget is spent"
elif [[ -n "${BACKDOOR_REPRO_DEADLINE:-}" ]]; then  # set by a wrapper, e.g. a cluster job that knows its end
  [[ "$BACKDOOR_REPRO_DEADLINE" =~ ^[0-9]+$ ]] || { echo "error: BACKDOOR_REPRO_DEADLINE must be whole seconds since the epoch (date +%s), got '$BACKDOOR_REPRO_DEADLINE'" >&2; exit 2; }
  when="$(date -d "@$BACKDOOR_REPRO_DEADLINE" 2>/dev/null || echo "seconds since the epoch")"
  budget="the deadline BACKDOOR_REPRO_DEADLINE=$BACKDOOR_REPRO_DEADLINE ($when) has passed"
fi
TIME_BUDGET_EXIT=75  # resume.TIME_BUDGET_EXIT: stopped at the deadline, progress saved; rerun to continue
stopped_at_budget() {
  echo "stopped: $budget $1; finished stages and checkpoints are in the cache." \
       "Rerun the same command to continue." >&2
  exit "$TIME_BUDGET_EXIT"
}

echo "notebooks: ${notebooks[*]} ($profile)"
if [[ ! "$device" =~ ^(auto|cpu|cuda(:[0-9]+)?)$ ]]; then
  echo "error: --device must be auto, cpu, cuda or cuda:N, got '$device'" >&2; exit 2
fi
source scripts/ensure_env.sh  # sets PYTHON; makes BACKDOOR_REPRO_OUTPUT and BACKDOOR_REPRO_CACHE absolute (caller_dir)
params=(-p profile "$profile" -p device "$device" -p download "$download")
[[ -n "$data_root" ]] && params+=(-p data_root "$(cd "$data_root" && pwd)")
[[ -n "$dataset" ]] && params+=(-p dataset "$dataset")
[[ -n "$attacks" ]] && params+=(-p attacks "$attacks")
[[ "$dry_run" == True ]] && params+=(-p dry_run True)
# papermill only warns about a parameter that a notebook does not declare, and runs it without: refuse that here
paths=(); for n in "${notebooks[@]}"; do paths+=("notebooks/$n.ipynb"); done
package_module orchestration.notebook_params "${paths[@]}" "${params[@]}"
preflight=(--profile "$profile" --device "$device")
[[ -n "$data_root" ]] && preflight+=(--data-root "$data_root")
[[ "$download" == True ]] && preflight+=(--download)
[[ -n "$dataset" ]] && preflight+=(--dataset "$dataset")
[[ -n "$attacks" ]] && preflight+=(--attacks "$attacks")
[[ "$dry_run" == True ]] && preflight+=(--dry-run)
run_name="$profile${dataset:+-$dataset}"
final_root="${BACKDOOR_REPRO_OUTPUT:-$PWD}"
dry_tmp=""  # the temporary folder a dry run made, removed again if the preflight refuses the run
if [[ "$dry_run" == True ]]; then  # nothing of a dry run lands in the repository or the real cache
  if [[ -z "${BACKDOOR_REPRO_OUTPUT:-}" ]]; then
    final_root="$(mktemp -d "${TMPDIR:-/tmp}/backdoor-repro-dry-run-XXXXXX")"; dry_tmp="$final_root"
  fi
  export BACKDOOR_REPRO_CACHE="$final_root/.cache"
  run_name="$run_name-dry-run"
  out="$final_root/notebooks/executed/$run_name"
  echo "dry run: outputs, executed notebooks and cache under $final_root"
else
  out="notebooks/executed/$run_name"
fi
export BACKDOOR_REPRO_OUTPUT="$final_root"  # what the preflight checks (each notebook gets its staging folder)
preflight_status=0
"$PYTHON" -m backdoor_repro.orchestration.preflight "${preflight[@]}" || preflight_status=$?
if (( preflight_status )); then
  [[ -z "$dry_tmp" ]] || rm -rf "$dry_tmp"  # a refused dry run leaves no folder behind
  exit "$preflight_status"
fi
mkdir -p "$out" "$final_root"
out_abs="$(cd "$out" && pwd)"

# one run at a time per output folder: a second would mix its outputs into the first's and drop its staging folders
command -v flock >/dev/null || { echo "error: run_all.sh needs flock (util-linux)" >&2; exit 2; }
lock="$final_root/.run_all.lock"
exec 9<>"$lock"  # opened without truncating it: the pid of the run that holds it stays readable
if ! flock -n 9; then
  echo "error: another run_all.sh is running on $final_root (pid $(cat "$lock" 2>/dev/null || echo unknown))." \
       "Wait for it to end, or point BACKDOOR_REPRO_OUTPUT at another folder." >&2
  exit 2
fi
echo $$ >"$lock"

export MPLBACKEND=Agg
# A notebook writes its tables and figures into a staging folder; they replace the previous ones only once it has
# passed. Publishing is all or nothing: the moves are first listed in the folder's manifest; a run killed while
# moving leaves the manifest, and the next run on this output folder completes the moves from it.
publish() {  # <staging folder> <executed notebook> <its final path>
  local kind f
  for kind in figures tables; do
    [[ -d "$1/$kind" ]] || continue
    while IFS= read -r f; do printf '%s\t%s\n' "$1/$f" "$final_root/$f"; done < <(cd "$1" && find "$kind" -type f)
  done >"$1/.manifest.tmp"
  printf '%s\t%s\n' "$2" "$3" >>"$1/.manifest.tmp"
  mv "$1/.manifest.tmp" "$1/.manifest"
  complete_publish "$1"
}
complete_publish() {  # <staging folder with a manifest>
  local from to
  while IFS=$'\t' read -r from to; do
    [[ -e "$from" ]] || continue  # moved before the kill
    mkdir -p "$(dirname "$to")"; mv -f "$from" "$to"
    [[ -z "${BACKDOOR_REPRO_TEST_PUBLISH_PAUSE:-}" ]] || sleep "$BACKDOOR_REPRO_TEST_PUBLISH_PAUSE"  # tests: a kill window
  done <"$1/.manifest"
  rm -rf "$1"
}
alive() { [[ "$1" != $$ ]] && { kill -0 "$1" 2>/dev/null || [[ -e "/proc/$1" ]]; }; }
# Progress lines (lib/backdoor_repro/progress.py: a line per stage and per epoch, with the time left): the kernel
# appends them to a file in the notebook's staging folder, and tail shows them as they come. tail follows until its
# watcher ends: at stop_following, or within a second of this script's end, however it ends.
follow_progress() {  # <file>
  ( while kill -0 $$ 2>/dev/null; do sleep 1; done ) >/dev/null 2>&1 &
  watcher=$!
  tail -n +1 -s 0.5 -F --pid="$watcher" "$1" 2>/dev/null &
  follower=$!
}
stop_following() {  # the lines written so far are shown before it returns
  kill "$watcher" 2>/dev/null || true
  wait "$follower" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
}
# what killed runs left (kill -9 leaves it: nothing can clean up after it). Staging folders: the lock says their run
# is gone; a publish with its manifest is completed, the rest dropped. Running notebooks: by their pid, as a live run
# on another output folder shares notebooks/executed/.
for stale in "$final_root"/.staging-*-p*-*; do
  [[ -d "$stale" ]] || continue
  if [[ -f "$stale/.manifest" ]]; then
    echo "completing the publish that a killed run left in $stale"
    complete_publish "$stale"
  else
    rm -rf "$stale"
  fi
done
for stale in "$out"/.*.p*-*.running.ipynb; do  # .<notebook>.p<pid>-<random>.running.ipynb
  [[ -f "$stale" ]] || continue
  pid="${stale##*.p}"; pid="${pid%%-*}"
  [[ "$pid" =~ ^[0-9]+$ ]] && ! alive "$pid" && rm -f "$stale"
done

run_started=$(date +%s)
for n in "${notebooks[@]}"; do
  if [[ -n "${BACKDOOR_REPRO_DEADLINE:-}" && $(date +%s) -ge $BACKDOOR_REPRO_DEADLINE ]]; then
    stopped_at_budget "before notebook '$n'"
  fi
  echo "== $n ($profile)"
  start=$SECONDS
  running=".$n.p$$-$RANDOM.running.ipynb"  # this run's own (a run on another output folder may run the same notebook)
  tmp="$out/$running"
  staging="$(mktemp -d "$final_root/.staging-$n-p$$-XXXXXX")"
  progress="$staging/.progress.log"; : >"$progress"
  follow_progress "$progress"
  if BACKDOOR_REPRO_OUTPUT="$staging" BACKDOOR_REPRO_PUBLISHED="$final_root" BACKDOOR_REPRO_PROGRESS="$progress" "$PYTHON" -m papermill "notebooks/$n.ipynb" \
       "$tmp" "${params[@]}" --cwd notebooks -k python3 --log-level WARNING; then
    stop_following
    publish "$staging" "$out_abs/$running" "$out_abs/$n.ipynb"
    echo "   done in $((SECONDS - start)) s -> $out/$n.ipynb"
  else
    stop_following
    rm -rf "$staging"
    if grep -q '"ename": "TimeBudgetExhausted"' "$tmp" 2>/dev/null; then
      rm -f "$tmp"
      stopped_at_budget "in notebook '$n' (its tables and figures were not published)"
    fi
    mkdir -p "$out/failed"; mv "$tmp" "$out/failed/$n.ipynb" 2>/dev/null || true
    echo "error: notebook '$n' failed (profile $profile); the executed copy with the traceback is $out/failed/$n.ipynb;" \
         "its tables and figures were not published" >&2
    exit 1
  fi
done

# the site (python -m backdoor_repro.orchestration.site): the results matrix and every executed notebook, table and
# figure of this run name as HTML, built from what is now published; a dry run (code paths only, on a budget in a
# GPU session) and a machine without nbconvert skip it, saying so
site=(); site_args=(--profile "$run_name" --root "$final_root" --notebooks "$out_abs")
if [[ "$dry_run" == True ]]; then
  echo "dry run: no HTML site (python -m backdoor_repro.orchestration.site ${site_args[*]} builds one)"
elif "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('nbconvert') is None)"; then
  "$PYTHON" -m backdoor_repro.orchestration.site "${site_args[@]}" || {
    echo "error: the HTML site of $run_name was not built (the notebooks' outputs are published); rebuild it with" \
         "python -m backdoor_repro.orchestration.site ${site_args[*]}" >&2
    exit 1
  }
  site=(--site "$final_root/site/$run_name/index.html")
else
  echo "note: no HTML site: nbconvert is not installed here (pip install nbconvert, then" \
       "python -m backdoor_repro.orchestration.site ${site_args[*]})" >&2
fi
if [[ -d "$final_root/tables/$run_name" ]]; then  # from the run records: a run made in slices is pieced together
  echo "Wall time per notebook (run records; a stage counts for the first notebook that uses it):"
  package_module orchestration.run_times --tables "$final_root/tables/$run_name" --write \
    || echo "error: the wall-time table (run_times.{csv,md}) was not written" >&2
fi
package_module orchestration.summary --run "$run_name" --root "$final_root" --executed "$out_abs" \
  --notebooks "$(IFS=,; echo "${notebooks[*]}")" --since "$run_started" ${site[@]+"${site[@]}"}
echo "All done: ${notebooks[*]} ($profile$([[ "$dry_run" == True ]] && echo ", dry run: $final_root"))."
