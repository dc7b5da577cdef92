"""How far the smoke notebooks' checked quantities move across seeds, against the thresholds the notebooks assert.

Each smoke notebook ends with a check cell (``assert``) on a few quantities: the backdoor effect ASR − CTR without
a defense and after it, the drop between them, the defended accuracy, FCT's D_p precision and recall. This module
names those quantities and their thresholds once (:data:`CHECKS`, mirroring the notebooks' cells), reads them off a
run's tables, and, as ``python -m backdoor_repro.seed_spread``, reruns the checked slice of every notebook under
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from .paths import output_root, project_root

CHANCE = 10.0  # the smoke profile's CIFAR-10: 100 / 10 classes
FCT_ACCURACY_BOUNDS = {"fct_dbr": 1.7, "fct_dst": 1.8}  # x chance, as the fct notebook's check cell asserts


@dataclass(frozen=True)
class Check:
    notebook: str
    quantity: str  # what is measured, e.g. "dbd: BadNets ASR - CTR after DBD"
    op: str  # ">=" or "<="
    threshold: float
    value: Callable[[Path], float]  # read off the tables folder of one run

    def margin(self, value: float) -> float:
        """How far ``value`` is on the passing side of the threshold (negative: the check fails)."""
        return value - self.threshold if self.op == ">=" else self.threshold - value


def _metrics(tables: Path, name: str, attack: str) -> pd.DataFrame:
    """``defense x metric`` of one attack in a long-format table (mean over seeds where a table has several)."""
    frame = pd.read_csv(tables / f"{name}.csv")
    frame = frame[frame["attack"] == attack]
    if frame.empty:
        raise KeyError(f"{name}.csv has no rows for {attack}")
    return frame.groupby(["defense", "metric"])["value"].mean().unstack("metric")


def _effect(tables: Path, name: str, attack: str, defense: str) -> float:
    m = _metrics(tables, name, attack).loc[defense]
    return float(m["ASR"] - m["CTR"])


def _drop(tables: Path, name: str, attack: str, defense: str) -> float:
    return _effect(tables, name, attack, "none") - _effect(tables, name, attack, defense)


def _metric(tables: Path, name: str, attack: str, defense: str, metric: str) -> float:
    return float(_metrics(tables, name, attack).loc[defense, metric])


def _sd(tables: Path, column: str) -> float:
    row = pd.read_csv(tables / "fct_sample_distinguishment.csv").set_index("attack").loc["grid3"]
    if column == "recall / ceiling":
        return float(row["D_p recall"] / row["D_p recall ceiling"])
    return float(row[column])


def _grid_common(tables: Path) -> pd.DataFrame:
    frame = pd.read_csv(tables / "grid_common.csv")
    return frame.groupby(["defense", "attack", "metric"])["value"].mean().unstack("metric")


def _grid_min_effect(tables: Path) -> float:
    """The smallest No-Defense ASR − CTR over the grid's attacks."""
    nd = _grid_common(tables).xs("none", level="defense")
    return float((nd["ASR"] - nd["CTR"]).min())


def _grid_min_best_drop(tables: Path) -> float:
    """Over the attacks, the smallest drop of ASR from No Defense to the best defense on that attack."""
    common = _grid_common(tables)
    nd = common.xs("none", level="defense")["ASR"]
    best = common.drop("none", level="defense")["ASR"].groupby(level="attack").min()
    return float((nd - best).min())


def _checks() -> list[Check]:
    c = []
    for attack in ("badnets_dbd_2x2", "blend_kitty_fct"):
        c.append(Check("attacks", f"{attack}: ASR - CTR, no defense", ">=", 40,
                       lambda t, a=attack: _effect(t, "no_defense", a, "none")))
        c.append(Check("attacks", f"{attack}: ACC, no defense", ">=", 35,
                       lambda t, a=attack: _metric(t, "no_defense", a, "none", "ACC")))
    b = "badnets_dbd_2x2"
    c += [Check("dbd", f"{b}: ASR - CTR, no defense", ">=", 60, lambda t: _effect(t, "dbd_table1", b, "none")),
          Check("dbd", f"{b}: ASR - CTR after DBD", "<=", 15, lambda t: _effect(t, "dbd_table1", b, "dbd")),
          Check("dbd", f"{b}: effect drop, no defense -> DBD", ">=", 50, lambda t: _drop(t, "dbd_table1", b, "dbd")),
          Check("dbd", f"{b}: ACC after DBD", ">=", 1.5 * CHANCE, lambda t: _metric(t, "dbd_table1", b, "dbd", "ACC"))]
    c += [Check("fct", "grid3: D_p precision", ">=", 70, lambda t: _sd(t, "D_p precision")),
          Check("fct", "grid3: D_p recall / its ceiling", ">=", 0.7, lambda t: _sd(t, "recall / ceiling")),
          Check("fct", "grid3: ASR - CTR, no defense", ">=", 60, lambda t: _effect(t, "fct_t1", "grid3", "none"))]
    for d, accuracy_bound in FCT_ACCURACY_BOUNDS.items():  # FCT's ACC: on the non-target test images
        c += [Check("fct", f"grid3: ASR - CTR after {d}", "<=", 25, lambda t, d=d: _effect(t, "fct_t1", "grid3", d)),
              Check("fct", f"grid3: effect drop, no defense -> {d}", ">=", 50,
                    lambda t, d=d: _drop(t, "fct_t1", "grid3", d)),
              Check("fct", f"grid3: ACC (non-target images) after {d}", ">=", accuracy_bound * CHANCE,
                    lambda t, d=d: _metric(t, "fct_t1", "grid3", d, "ACC_no_target"))]
    w = "white3_bb"
    c += [Check("fmp", f"{w}: ASR - CTR, no defense", ">=", 60, lambda t: _effect(t, "fmp_t1", w, "none")),
          Check("fmp", f"{w}: effect drop, no defense -> FMP", ">=", 35, lambda t: _drop(t, "fmp_t1", w, "fmp")),
          Check("fmp", f"{w}: ACC after FMP", ">=", 3 * CHANCE, lambda t: _metric(t, "fmp_t1", w, "fmp", "ACC"))]
    g = "grid3_tr"
    c += [Check("trap_and_replace", f"{g}: ASR - CTR, no defense", ">=", 60, lambda t: _effect(t, "tr_main", g, "none")),
          Check("trap_and_replace", f"{g}: ASR - CTR after T&R", "<=", 25,
                lambda t: _effect(t, "tr_main", g, "trap_and_replace")),
          Check("trap_and_replace", f"{g}: effect drop, no defense -> T&R", ">=", 50,
                lambda t: _drop(t, "tr_main", g, "trap_and_replace")),
          Check("trap_and_replace", f"{g}: ACC after T&R", ">=", 2.5 * CHANCE,
                lambda t: _metric(t, "tr_main", g, "trap_and_replace", "ACC"))]
    c += [Check("grid", "every attack: ASR - CTR, no defense (min over attacks)", ">=", 40, _grid_min_effect),
          Check("grid", "every attack: ASR drop to its best defense (min over attacks)", ">=", 30,
                _grid_min_best_drop)]
    return c


CHECKS = _checks()
# the slice of each notebook that its check cell needs (None: the whole notebook, as the grid's check requires)
SLICES = {"attacks": "badnets_dbd_2x2,blend_kitty_fct", "dbd": "badnets_dbd_2x2", "fct": "grid3",
          "fmp": "white3_bb", "trap_and_replace": "grid3_tr", "grid": None}


def read_checks(notebook: str, tables: Path) -> list[dict]:
    """The notebook's checked quantities in one run's tables folder, each with its threshold and margin."""
    rows = []
    for check in (c for c in CHECKS if c.notebook == notebook):
        value = check.value(tables)
        rows.append({"notebook": notebook, "quantity": check.quantity, "check": f"{check.op} {check.threshold:g}",
                     "value": round(value, 2), "margin": round(check.margin(value), 2)})
    return rows


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
    from .numerics import KERNEL_CAPS, has_avx2  # the caps run_all.sh applies, so seed 0 is comparable
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
    from .report import write_frame
    write_frame(frame, "seed_spread", "reliability")  # not under tables/smoke: no notebook writes it
    print(frame.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
