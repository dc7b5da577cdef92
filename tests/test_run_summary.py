"""run_all.sh's closing summary (issue 30): the outputs the run wrote and where, the claims it judged (failing ones
first) and the checks its notebooks passed; and, through a fake checkout, the progress lines, the site and the
summary in run_all.sh's own output."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backdoor_repro.orchestration.summary import checks_of, claim_lines, main, summary

REPO = Path(__file__).resolve().parents[1]


def executed(path: Path, *printed: str) -> Path:
    cells = [{"cell_type": "code", "execution_count": 1, "id": f"c{i}", "metadata": {}, "source": "",
              "outputs": [{"output_type": "stream", "name": "stdout", "text": text}]} for i, text in enumerate(printed)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def claims(path: Path, *rows: tuple[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("claim,paper,source,rule,ours,verdict,why\n" +
                    "".join(f"{c},1.5,s,ours <= 5,3.25,{v},\n" for c, v in rows))
    return path


def test_the_claims_are_counted_and_the_failing_ones_shown_first(tmp_path):
    path = claims(tmp_path / "tables" / "x_claims.csv", ("a", "not testable at this scale"), ("b", "holds"),
                  ("c", "fails"), ("d", "not run"), ("e", "holds"))
    lines = claim_lines(path, tmp_path)
    assert lines[0] == "5 claims: 1 fails, 2 holds, 1 not testable at this scale, 1 not run"
    assert lines[1:] == ["  fails: c: paper 1.5, ours 3.25", "  holds: b: paper 1.5, ours 3.25",
                         "  holds: e: paper 1.5, ours 3.25", "  (2 more in tables/x_claims.csv)"]
    assert claim_lines(tmp_path / "absent.csv", tmp_path) == ["no claims table"]


def test_the_checks_of_a_notebook_are_read_off_what_it_printed(tmp_path):
    assert checks_of(executed(tmp_path / "a.ipynb", "holds: x >= 1\nholds: y <= 2\n", "other\n")) == "2 held"
    assert checks_of(executed(tmp_path / "b.ipynb", "dry run: results not checked (a couple of steps)\n")) == \
        "not checked (dry run)"
    assert checks_of(executed(tmp_path / "c.ipynb", "no checks on the cpu profile (checks exist for: smoke)\n")) == \
        "none on this profile"
    assert checks_of(tmp_path / "absent.ipynb") == "no executed notebook"


def test_the_summary_counts_only_what_this_run_wrote(tmp_path, capsys):
    root = tmp_path
    old = root / "tables" / "smoke" / "old.csv"
    old.parent.mkdir(parents=True)
    old.write_text("a\n")
    os.utime(old, (time.time() - 3600, time.time() - 3600))  # an earlier run's
    (root / "tables" / "smoke" / "new.csv").write_text("a\n")
    (root / "figures" / "smoke").mkdir(parents=True)
    (root / "figures" / "smoke" / "f.png").write_bytes(b"png")
    claims(root / "tables" / "smoke" / "dbd_claims.csv", ("DBD removes x", "holds"))
    notebooks = root / "notebooks" / "executed" / "smoke"
    executed(notebooks / "dbd.ipynb", "holds: x\n")
    site = root / "site" / "smoke" / "index.html"
    text = summary("smoke", root, notebooks, ["attacks", "dbd"], time.time() - 60, site)
    assert text.splitlines() == [
        "Summary (smoke):",
        "  written: executed notebooks 1 in notebooks/executed/smoke/ (dbd); table files 2 in tables/smoke/; figure "
        "files 1 in figures/smoke/; the site: site/smoke/index.html",
        "  the papers' claims (tables/smoke/<notebook>_claims.csv):",
        "    attacks: no claims table",
        "    dbd: 1 claims: 1 holds",
        "      holds: DBD removes x: paper 1.5, ours 3.25",
        "  checks: attacks no executed notebook; dbd 1 held (a check that fails stops its notebook)"]
    assert main(["--run", "smoke", "--root", str(root), "--executed", str(notebooks), "--notebooks", "dbd",
                 "--since", "0"]) == 0
    assert "table files 3 in tables/smoke/" in capsys.readouterr().out


PROGRESS_CELL = """from backdoor_repro import progress
with progress.stage("no_defense [grid3]"):
    loop = progress.EpochProgress(3, every=0)
    for epoch in (1, 2, 3):
        loop.after_epoch(epoch, float(epoch))
print("holds: grid3: ASR >= 60")
import pandas as pd
from backdoor_repro import report
report.write_frame(pd.DataFrame({"value": [1]}), "no_defense", profile)
report.write_run_record("attacks", profile, 1.0)"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_run_all_shows_the_progress_lines_builds_the_site_and_ends_with_the_summary(tmp_path):
    checkout, out = tmp_path / "checkout", tmp_path / "out"
    (checkout / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "run_all.sh", checkout)
    shutil.copytree(REPO / "scripts", checkout / "scripts")
    cells = [("profile = 'smoke'\ndevice = 'auto'\ndownload = False", ["parameters"]), (PROGRESS_CELL, [])]
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {"tags": tags},
                           "outputs": [], "source": src} for i, (src, tags) in enumerate(cells)],
                "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
                "nbformat": 4, "nbformat_minor": 5}
    (checkout / "notebooks" / "attacks.ipynb").write_text(json.dumps(notebook))
    env = {**os.environ, "BACKDOOR_REPRO_PYTHON": sys.executable, "BACKDOOR_REPRO_OUTPUT": str(out)}
    run = subprocess.run(["bash", "run_all.sh", "--only", "attacks"], cwd=checkout, env=env, capture_output=True,
                         text=True, timeout=200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [line.strip() for line in run.stdout.splitlines()]
    shown = [line.split(" ", 1)[1] for line in lines if line[:2].isdigit() and line[2:3] == ":"]  # HH:MM:SS ...
    assert shown[0] == "no_defense [grid3]: started" and shown[-1].startswith("no_defense [grid3]: done in ")
    assert [s.split(",")[0] for s in shown[1:-1]] == [f"no_defense [grid3]: epoch {e}/3" for e in (1, 2, 3)]
    assert lines.index("== attacks (smoke)") < lines.index(next(s for s in lines if s.endswith("started")))
    assert (out / "site" / "smoke" / "index.html").is_file() and (out / "site" / "smoke" / "attacks.html").is_file()
    assert "checks: attacks 1 held" in run.stdout and "table files 6 in tables/smoke/" in run.stdout  # 3 + record + times
    assert "Wall time per notebook" in run.stdout and "| attacks | 0 h 00 min | 0 |" in run.stdout
    assert (out / "tables" / "smoke" / "run_times.md").is_file()
    assert lines[-1] == "All done: attacks (smoke)."
    assert not list(out.glob(".staging-*")) and not list((out / "site").glob(".*"))
