"""The closing summary of ``run_all.sh`` (issue 30): what the run wrote and where, the papers' claims it judged (the
headline numbers, from ``tables/<run>/<notebook>_claims.csv``) and the checks its notebooks passed (the ``holds:``
lines that ``Experiment.check`` prints; a notebook whose check fails stops the run before this).

Standard library only and no import of the package: ``run_all.sh`` runs it as a script (``package_module`` in
scripts/ensure_env.sh), in a fraction of a second where importing torch takes seconds::

    python summary.py --run smoke --root . --executed notebooks/executed/smoke --notebooks attacks,dbd --since 0
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

CLAIMS_SHOWN = 3  # per notebook; the rest are counted (all are in its claims table)
ORDER = ("fails", "holds", "not testable at this scale", "not run")


def shown(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` where it is inside, else as it is."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def written_since(folder: Path, since: float) -> list[Path]:
    """The files in ``folder`` (not below) modified at or after ``since`` (seconds since the epoch)."""
    return sorted(p for p in folder.glob("*") if p.is_file() and p.stat().st_mtime >= since) if folder.is_dir() else []


def claim_lines(path: Path, root: Path) -> list[str]:
    """The claims of one notebook: the verdicts counted, then the first :data:`CLAIMS_SHOWN` (failing ones first)."""
    if not path.is_file():
        return ["no claims table"]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return ["no claim judged"]
    counts = {v: sum(r.get("verdict") == v for r in rows) for v in ORDER}
    lines = [f"{len(rows)} claims: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)]
    rows.sort(key=lambda r: ORDER.index(r["verdict"]) if r.get("verdict") in ORDER else len(ORDER))
    for r in rows[:CLAIMS_SHOWN]:
        lines.append(f"  {r.get('verdict')}: {r.get('claim')}: paper {r.get('paper')}, ours {r.get('ours') or '-'}")
    if len(rows) > CLAIMS_SHOWN:
        lines.append(f"  ({len(rows) - CLAIMS_SHOWN} more in {shown(path, root)})")
    return lines


def checks_of(notebook: Path) -> str:
    """What the checks of an executed notebook said: how many held, or why none ran."""
    if not notebook.is_file():
        return "no executed notebook"
    text = []
    for cell in json.loads(notebook.read_text()).get("cells", []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                text += "".join(output.get("text", "")).splitlines()
    held = sum(line.startswith("holds: ") for line in text)
    if any(line.startswith("dry run: results not checked") for line in text):
        return "not checked (dry run)"
    if not held and any(line.startswith("no checks on the ") for line in text):
        return "none on this profile"
    return f"{held} held"


def summary(run: str, root: Path, executed: Path, notebooks: list[str], since: float, site: Path | None) -> str:
    tables, figures = root / "tables" / run, root / "figures" / run
    done = [n for n in notebooks if (executed / f"{n}.ipynb").is_file()]
    table_files, figure_files = written_since(tables, since), written_since(figures, since)
    lines = [f"Summary ({run}):",
             f"  written: executed notebooks {len(done)} in {shown(executed, root)}/ ({', '.join(done) or 'none'}); "
             f"table files {len(table_files)} in {shown(tables, root)}/; figure files {len(figure_files)} in "
             f"{shown(figures, root)}/" + (f"; the site: {shown(site, root)}" if site else ""),
             f"  the papers' claims ({shown(tables, root)}/<notebook>_claims.csv):"]
    for n in notebooks:
        first, *rest = claim_lines(tables / f"{n}_claims.csv", root)
        lines += [f"    {n}: {first}", *(f"    {line}" for line in rest)]
    lines.append("  checks: " + "; ".join(f"{n} {checks_of(executed / f'{n}.ipynb')}" for n in notebooks) +
                 " (a check that fails stops its notebook)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="run_all.sh's closing summary")
    parser.add_argument("--run", required=True, help="the run name (profile, dataset, dry run): tables/<run>")
    parser.add_argument("--root", type=Path, required=True, help="the folder holding tables/ and figures/")
    parser.add_argument("--executed", type=Path, required=True, help="the executed notebooks of the run")
    parser.add_argument("--notebooks", required=True, help="the notebooks the run executed, comma-separated")
    parser.add_argument("--since", type=float, required=True, help="the run's start, seconds since the epoch")
    parser.add_argument("--site", type=Path, help="the site's index, if one was built")
    args = parser.parse_args(argv)
    print(summary(args.run, args.root, args.executed, [n for n in args.notebooks.split(",") if n], args.since,
                  args.site))
    return 0


if __name__ == "__main__":
    sys.exit(main())
