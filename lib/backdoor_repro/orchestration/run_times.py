"""Each notebook's wall time in a ``run_all.sh`` run, pieced together from the run records of a profile.

A long profile (``cpu``) runs in slices: the execution that publishes a notebook takes most of its stages from the
cache, built by earlier slices or by an earlier notebook (the attacks notebook trains the No-Defense models that the
paper notebooks reuse). Each run record lists every stage it used with its build time (``stage_builds``,
report.write_run_record). A stage counts for the first notebook, in ``run_all.sh``'s order, whose record lists it,
as it would in one uninterrupted run; a notebook's time is its execution's wall time less the building done in it,
plus the build time of the stages it counts. Standard library only (``run_all.sh`` runs it as a script)::

    python run_times.py --tables tables/cpu [--write]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

ORDER = ("attacks", "dbd", "trap_and_replace", "fct", "fmp", "grid")  # run_all.sh's ORDER
NOTEBOOK_BUDGET_SECONDS = 7200  # the cpu profile's budget per notebook (issue 29)
COLUMNS = ("notebook", "execution_seconds", "stages_counted", "notebook_seconds", "from_empty_cache_seconds",
           "within_budget", "commit")


def _stage_entries(stages) -> list[dict] | None:
    """A record's ``stage_builds`` as entries with a key, or None when it is missing or malformed."""
    if not isinstance(stages, list) or not all(isinstance(e, dict) and "key" in e for e in stages):
        return None
    return stages


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def notebook_times(tables: Path, order=ORDER) -> list[dict]:
    """A row per notebook with a run record in ``tables`` (``<notebook>_run.json``), in ``order``. A record without
    stage build times (written before they were kept, or malformed) gives its execution time alone and no notebook
    time. ``within_budget`` is said on the cpu profile only, whose budget it is."""
    rows, counted = [], set()
    budgeted = tables.name.split("-")[0] == "cpu"
    for name in order:
        path = tables / f"{name}_run.json"
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
        except ValueError:
            record = None
        record = record if isinstance(record, dict) else {}
        wall, stages = _number(record.get("wall_seconds")), _stage_entries(record.get("stage_builds"))
        row = {"notebook": name, "execution_seconds": wall, "stages_counted": None, "notebook_seconds": None,
               "from_empty_cache_seconds": _number(record.get("from_empty_cache_seconds")), "within_budget": "",
               "commit": str(record.get("commit", ""))}
        if stages is not None:
            own = [s for s in stages if s["key"] not in counted]
            counted.update(s["key"] for s in stages)
            row["stages_counted"] = len(own)
            seconds = [_number(s.get("seconds")) for s in own]
            building = sum(_number(s.get("seconds_in_this_run")) or 0.0 for s in stages)
            if wall is not None and None not in seconds:
                total = wall - building + sum(seconds)
                row["notebook_seconds"] = round(total, 1)
                if budgeted:
                    row["within_budget"] = "yes" if total <= NOTEBOOK_BUDGET_SECONDS else "no"
        rows.append(row)
    return rows


def _hours(seconds) -> str:
    return "-" if seconds is None else f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def markdown(rows: list[dict]) -> str:
    total = [r["notebook_seconds"] for r in rows]
    lines = ["| notebook | this execution | stages counted | notebook in run_all.sh | from an empty cache | "
             f"within {NOTEBOOK_BUDGET_SECONDS // 3600} h | commit |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['notebook']} | {_hours(r['execution_seconds'])} | "
                     f"{'-' if r['stages_counted'] is None else r['stages_counted']} | {_hours(r['notebook_seconds'])} | "
                     f"{_hours(r['from_empty_cache_seconds'])} | {r['within_budget'] or '-'} | {r['commit']} |")
    if rows and all(t is not None for t in total):
        lines.append(f"| all | | | {_hours(sum(total))} | | | |")
    commits = sorted({r["commit"] for r in rows})
    if len(commits) > 1:  # a stage key that changed between them would be counted under both
        lines.append(f"\nThe records come from {len(commits)} commits ({', '.join(commits)}).")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], tables: Path) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    for name, text in (("run_times.csv", out.getvalue()), ("run_times.md", markdown(rows))):
        tmp = tables / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(tables / name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="each notebook's wall time in a run_all.sh run, from the run records")
    parser.add_argument("--tables", type=Path, required=True, help="a profile's tables folder, e.g. tables/cpu")
    parser.add_argument("--write", action="store_true", help="also write run_times.csv and run_times.md there")
    args = parser.parse_args(argv)
    if not args.tables.is_dir():
        parser.error(f"{args.tables} is not a folder")
    rows = notebook_times(args.tables)
    if not rows:
        print(f"no run records in {args.tables}")
        return 0
    print(markdown(rows), end="")
    if args.write:
        write(rows, args.tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
