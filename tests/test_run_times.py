"""Each notebook's wall time in one run_all.sh run, pieced together from the run records of a run made in slices."""
import json
import re
from pathlib import Path

import pytest

from backdoor_repro.orchestration import run_times

pytestmark = pytest.mark.timeout(60)


def _record(tables: Path, name: str, wall: float, *stages: tuple[str, float | None, float]) -> None:
    """``stages``: (key, recorded build seconds, seconds spent building it in this execution)."""
    (tables / f"{name}_run.json").write_text(json.dumps({
        "wall_seconds": wall, "commit": "abc", "stage_builds": [
            {"stage": "s", "key": k, "seconds": s, "built_in_this_run": here > 0, "seconds_in_this_run": here}
            for k, s, here in stages]}))


def test_a_stage_counts_for_the_first_notebook_that_uses_it(tmp_path):
    tmp_path = tmp_path / "cpu"  # the profile whose budget it is
    tmp_path.mkdir()
    # attacks: built "nd" over two slices (1000 s earlier, 500 s in this execution of 600 s), took "nd2" from the cache
    _record(tmp_path, "attacks", 600.0, ("nd", 1500.0, 500.0), ("nd2", 3000.0, 0.0))
    # dbd: reuses "nd", builds "dbd" (7000 s, all in this execution of 7100 s)
    _record(tmp_path, "dbd", 7100.0, ("nd", 1500.0, 0.0), ("dbd", 7000.0, 7000.0))
    rows = {r["notebook"]: r for r in run_times.notebook_times(tmp_path)}
    assert rows["attacks"]["notebook_seconds"] == 600 - 500 + 1500 + 3000
    assert rows["attacks"]["stages_counted"] == 2 and rows["attacks"]["within_budget"] == "yes"
    assert rows["dbd"]["notebook_seconds"] == 7100 and rows["dbd"]["stages_counted"] == 1
    assert rows["dbd"]["within_budget"] == "yes"
    text = run_times.markdown(list(rows.values()))
    assert "| attacks | 0 h 10 min | 2 | 1 h 16 min |" in text and "| all | | | 3 h 15 min |" in text


def test_over_budget_and_unknown_times_are_said(tmp_path):
    tmp_path = tmp_path / "cpu"
    tmp_path.mkdir()
    _record(tmp_path, "attacks", 100.0, ("nd", 8000.0, 0.0))
    _record(tmp_path, "fct", 50.0, ("old", None, 0.0))  # built before build times were kept
    (tmp_path / "fmp_run.json").write_text(json.dumps({"wall_seconds": 9.0, "commit": "x"}))  # an older record
    rows = {r["notebook"]: r for r in run_times.notebook_times(tmp_path)}
    assert rows["attacks"]["within_budget"] == "no"
    assert rows["fct"]["notebook_seconds"] is None and rows["fct"]["within_budget"] == ""
    assert rows["fmp"]["stages_counted"] is None and rows["fmp"]["execution_seconds"] == 9.0
    assert "| all |" not in run_times.markdown(list(rows.values()))


def test_write_leaves_the_csv_and_markdown_and_nothing_else(tmp_path):
    _record(tmp_path, "attacks", 10.0, ("nd", 20.0, 0.0))
    assert run_times.main(["--tables", str(tmp_path), "--write"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attacks_run.json", "run_times.csv", "run_times.md"]
    assert (tmp_path / "run_times.csv").read_text().splitlines()[0] == ",".join(run_times.COLUMNS)


def test_the_order_is_run_all_s():
    script = (Path(__file__).resolve().parents[1] / "run_all.sh").read_text()
    assert tuple(re.search(r"^ORDER=\(([^)]*)\)", script, re.M).group(1).split()) == run_times.ORDER


def test_without_run_records_nothing_is_written(tmp_path, capsys):
    assert run_times.main(["--tables", str(tmp_path), "--write"]) == 0
    assert "no run records" in capsys.readouterr().out and not list(tmp_path.iterdir())


def test_malformed_records_mixed_commits_and_other_profiles_are_said_not_guessed(tmp_path):
    _record(tmp_path, "attacks", 10.0, ("nd", 9000.0, 0.0))  # over 2 h, but smoke has no such budget
    (tmp_path / "dbd_run.json").write_text(json.dumps({"wall_seconds": None, "commit": "def", "stage_builds": "?"}))
    (tmp_path / "fct_run.json").write_text("not json")
    rows = {r["notebook"]: r for r in run_times.notebook_times(tmp_path)}
    assert rows["attacks"]["notebook_seconds"] == 9010.0 and rows["attacks"]["within_budget"] == ""
    assert rows["dbd"]["notebook_seconds"] is None and rows["fct"]["execution_seconds"] is None
    assert "The records come from 3 commits" in run_times.markdown(list(rows.values()))
