"""How far the smoke notebooks' checked quantities move across seeds, against the thresholds the notebooks assert.

Each smoke notebook ends with a check cell on a few quantities: the backdoor effect ASR − CTR without a defense and
after it, the drop between them, the defended accuracy, FCT's D_p precision and recall. Those quantities and their
thresholds are declared once, in each notebook's protocol record (:mod:`backdoor_repro.records`); this module reads
them off a run's tables with the same rules, and, as ``python -m backdoor_repro.orchestration.seed_spread``, reruns the checked
slice of every notebook under
other seeds with papermill (outputs in a scratch folder, never in ``tables/smoke``) and writes
``tables/reliability/seed_spread.{csv,md,tex}``: per quantity the value at each seed, the minimum margin to its threshold and
how many seeds passed.

A "seed" here sets both ``seed`` (training: initialisation, batch order, augmentation) and ``data_seed`` (which
images are poisoned and the random trigger parts), so the spread covers both sources of variation.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ..paths import output_root, project_root

CHANCE_CLASSES = 10  # the smoke profile's CIFAR-10


def notebook_records() -> dict:
    """Every notebook's protocol record: the registered defenses' (one per notebook) and the grid's."""
    from ..defenses import DEFENSES
    from .grid import GRID_RECORD
    records = {}
    for defense in DEFENSES.values():
        records.setdefault(defense.record.notebook, defense.record)
    records["grid"] = GRID_RECORD
    return records


RECORDS = notebook_records()
ORDER = ("attacks", "dbd", "fct", "fmp", "trap_and_replace", "grid")
# the slice of each notebook that its checks need (None: the whole notebook, as the grid's check requires)
SLICES = {name: (",".join(dict.fromkeys(a for c in RECORDS[name].checks["smoke"] for a in c.attacks)) or None)
          for name in ORDER}


def read_checks(notebook: str, tables: Path) -> list[dict]:
    """The notebook's checked quantities in one run's tables folder, each with its threshold and margin."""
    from ..records import check_rows
    return [{"notebook": notebook, **row} for row in check_rows(RECORDS[notebook].checks["smoke"], tables, CHANCE_CLASSES)]


def _run_folder(scratch: Path, notebook: str, seed: int) -> Path:
    return scratch / f"{notebook}-seed{seed}"


def _run_notebook(notebook: str, seed: int, scratch: Path, env: dict) -> tuple[Path, str, float]:
    """papermill of ``notebook``'s checked slice at ``seed``; returns (tables folder, outcome, seconds)."""
    out = _run_folder(scratch, notebook, seed)
    if out.exists():  # a rerun starts clean: no table of an earlier run may be read as this one's
        shutil.rmtree(out)
    out.mkdir(parents=True)
    params = ["-p", "profile", "smoke", "-p", "data_seed", str(seed)]
    params += ["-y", f"seeds: [{seed}]"] if notebook == "trap_and_replace" else ["-p", "seed", str(seed)]
    if SLICES[notebook]:
        params += ["-p", "attacks", SLICES[notebook]]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "papermill", f"notebooks/{notebook}.ipynb", str(out / "run.ipynb"),
                           *params, "--cwd", "notebooks", "-k", "python3", "--log-level", "WARNING"],
                          cwd=project_root(), env={**env, "BACKDOOR_REPRO_OUTPUT": str(out)},
                          capture_output=True, text=True)
    outcome = "passed" if done.returncode == 0 else "check failed" if "AssertionError" in done.stderr else "error"
    if outcome == "error":
        print(done.stderr[-3000:], file=sys.stderr)
    return out / "tables" / "smoke", outcome, time.perf_counter() - started


def spread_frame(records: list[dict]) -> pd.DataFrame:
    """One row per checked quantity: its value at each seed, the smallest margin and the seeds that passed."""
    frame = pd.DataFrame(records)
    wide = frame.pivot_table(index=["notebook", "quantity", "check"], columns="seed", values="value", sort=False)
    wide.columns = [f"seed {s}" for s in wide.columns]
    grouped = frame.groupby(["notebook", "quantity", "check"], sort=False)
    wide["min margin"] = grouped["margin"].min()
    wide["passed"] = grouped["margin"].apply(lambda m: f"{int((m >= 0).sum())}/{len(m)}")
    return wide.reset_index()


def keep_other_notebooks(frame: pd.DataFrame, previous: Path) -> pd.DataFrame:
    """``frame`` with the rows of the notebooks it does not cover taken from the ``previous`` table, so that
    ``--notebooks grid`` refreshes the grid's rows and keeps the others as they were written (their checks are not
    re-applied: their runs' tables are not at hand). Only where both have the same seeds: a row measured at other
    seeds is never mixed into the table (the previous one is then replaced whole, which is printed)."""
    if not previous.exists():
        return frame
    old = pd.read_csv(previous, dtype={"check": str, "passed": str})
    if list(old.columns) != list(frame.columns):
        print(f"{previous.name} has columns {list(old.columns)}; replaced whole by this run's notebooks")
        return frame
    kept = old[~old["notebook"].isin(frame["notebook"])]
    merged = pd.concat([kept, frame], ignore_index=True)
    order = {name: i for i, name in enumerate(SLICES)}
    return merged.sort_values("notebook", key=lambda n: n.map(order), kind="stable").reset_index(drop=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3", help="seeds to rerun (seed 0 is read from tables/smoke)")
    parser.add_argument("--notebooks", default=",".join(SLICES), help="comma-separated subset")
    parser.add_argument("--scratch", default=None, help="where the reruns write (default: a new temp folder); a "
                        "folder used before is continued, and every check is re-read from its runs' tables")
    parser.add_argument("--rerun", default="", help="comma-separated notebooks to run again in a reused --scratch "
                        "(after a change to their code or schedule)")
    args = parser.parse_args(argv)
    notebooks = [n.strip() for n in args.notebooks.split(",") if n.strip()]
    rerun = {n.strip() for n in args.rerun.split(",") if n.strip()}
    unknown = [n for n in notebooks + sorted(rerun) if n not in SLICES]
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    if unknown or not notebooks:
        parser.error(f"unknown notebooks {unknown}; choose from {', '.join(SLICES)}")
    if not seeds or not all(s.isdigit() for s in seeds):
        parser.error(f"--seeds must be comma-separated non-negative integers, got {args.seeds!r}")
    committed = output_root() / "tables" / "smoke"
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="seed-spread-")).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    from ..numerics import KERNEL_CAPS, has_avx2  # the caps run_all.sh applies, so seed 0 is comparable
    env = dict(os.environ, MPLBACKEND="Agg")
    if has_avx2():
        env = {**KERNEL_CAPS, **env}
    records, log = [], scratch / "records.jsonl"
    done = {}
    if log.exists():  # a rerun of the same scratch folder continues where it stopped
        for line in log.read_text().splitlines():
            r = json.loads(line)
            if r["notebook"] not in rerun:
                done[(r["notebook"], r["seed"])] = r
    for notebook in notebooks:
        records += [{**r, "seed": 0, "outcome": "committed"} for r in read_checks(notebook, committed)]
    for seed in map(int, seeds):
        for notebook in notebooks:
            if (notebook, seed) not in done:
                tables, outcome, seconds = _run_notebook(notebook, seed, scratch, env)
                rows = read_checks(notebook, tables) if outcome != "error" else []
                done[(notebook, seed)] = {"notebook": notebook, "seed": seed, "outcome": outcome,
                                          "seconds": round(seconds), "rows": rows}  # rows: as checked then
                if outcome != "error":  # an error (not a failed check) is retried by a rerun
                    with open(log, "a") as f:
                        f.write(json.dumps(done[(notebook, seed)]) + "\n")
                print(f"{notebook} seed {seed}: {outcome} in {seconds:.0f} s", flush=True)
            r = done[(notebook, seed)]
            # read again from the run's tables, so that a check changed since the run is applied as it is now
            rows = read_checks(notebook, _run_folder(scratch, notebook, seed) / "tables" / "smoke") \
                if r["outcome"] != "error" else []
            records += [{**row, "seed": seed, "outcome": r["outcome"]} for row in rows]
    frame = keep_other_notebooks(spread_frame(records), output_root() / "tables" / "reliability" / "seed_spread.csv")
    from ..report import write_frame
    write_frame(frame, "seed_spread", "reliability")  # not under tables/smoke: no notebook writes it
    print(frame.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
