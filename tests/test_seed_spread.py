"""The seed-spread study reads each notebook's checked quantities off a run's tables with the notebook's thresholds:
the same protocol records (records.py) that the notebooks assert."""
import pandas as pd
import pytest

from backdoor_repro.orchestration import seed_spread
from backdoor_repro.paths import project_root

COMMITTED = project_root() / "tables" / "smoke"


def test_the_committed_smoke_tables_pass_every_check_they_are_read_against():
    for notebook in seed_spread.SLICES:
        rows = seed_spread.read_checks(notebook, COMMITTED)
        assert rows, notebook
        assert all(r["margin"] >= 0 for r in rows), [r for r in rows if r["margin"] < 0]


def test_margins_are_signed_by_the_side_of_the_threshold():
    from backdoor_repro.records import Check
    at_least = Check("q", ">=", 60, lambda t: 0.0)
    at_most = Check("q", "<=", 15, lambda t: 0.0)
    assert at_least.margin(70, 10) == 10 and at_least.margin(55, 10) == -5
    assert at_most.margin(5, 10) == 10 and at_most.margin(20, 10) == -5
    relative = Check("q", ">=", 1.5, lambda t: 0.0, times_chance=True)  # 1.5 x chance: 15 on 10 classes, 3.5 on 43
    assert relative.margin(20, 10) == 5 and round(relative.margin(5, 43), 2) == 1.51
    with pytest.raises(ValueError, match="number of classes"):
        relative.margin(20, None)


def test_the_slices_and_checks_come_from_the_notebooks_records():
    from backdoor_repro.defenses import get_defense
    assert seed_spread.RECORDS["dbd"] is get_defense("dbd").record
    assert seed_spread.RECORDS["fct"] is get_defense("fct_dst").record is get_defense("fct_dbr").record
    assert seed_spread.SLICES == {"attacks": "badnets_dbd_2x2,blend_kitty_fct", "dbd": "badnets_dbd_2x2",
                                  "fct": "grid3", "fmp": "white3_bb", "trap_and_replace": "grid3_tr", "grid": None}


def test_a_quantity_is_read_from_its_table(tmp_path):
    rows = [("badnets_dbd_2x2", "none", "ASR", 90.0), ("badnets_dbd_2x2", "none", "CTR", 10.0),
            ("badnets_dbd_2x2", "none", "ACC", 50.0), ("blend_kitty_fct", "none", "ASR", 70.0),
            ("blend_kitty_fct", "none", "CTR", 40.0), ("blend_kitty_fct", "none", "ACC", 30.0)]
    pd.DataFrame(rows, columns=["attack", "defense", "metric", "value"]).to_csv(tmp_path / "no_defense.csv")
    got = {r["quantity"]: (r["value"], r["margin"]) for r in seed_spread.read_checks("attacks", tmp_path)}
    assert got["badnets_dbd_2x2: ASR - CTR, no defense"] == (80.0, 40.0)
    assert got["blend_kitty_fct: ACC, no defense"] == (30.0, -5.0)


def test_the_spread_frame_counts_the_seeds_that_pass():
    records = [{"notebook": "a", "quantity": "q", "check": ">= 1", "value": v, "margin": v - 1, "seed": s}
               for s, v in enumerate([3.0, 0.5, 2.0])]
    frame = seed_spread.spread_frame(records)
    assert frame.loc[0, "passed"] == "2/3" and frame.loc[0, "min margin"] == pytest.approx(-0.5)
    assert [frame.loc[0, f"seed {s}"] for s in range(3)] == [3.0, 0.5, 2.0]


def _no_defense_table(folder, badnets_asr):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("badnets_dbd_2x2", "none", "ASR", badnets_asr), ("badnets_dbd_2x2", "none", "CTR", 10.0),
            ("badnets_dbd_2x2", "none", "ACC", 50.0), ("blend_kitty_fct", "none", "ASR", 70.0),
            ("blend_kitty_fct", "none", "CTR", 10.0), ("blend_kitty_fct", "none", "ACC", 40.0)]
    pd.DataFrame(rows, columns=["attack", "defense", "metric", "value"]).to_csv(folder / "no_defense.csv")


def test_a_reused_scratch_folder_rereads_its_tables_and_reruns_only_what_is_asked(tmp_path, monkeypatch):
    from backdoor_repro.paths import output_root
    monkeypatch.setenv("BACKDOOR_REPRO_OUTPUT", str(tmp_path / "out"))  # not the session's folder, which notebooks fill
    _no_defense_table(output_root() / "tables" / "smoke", 90.0)  # seed 0: the committed tables
    runs = []

    def fake_run(notebook, seed, scratch, env):
        runs.append((notebook, seed))
        tables = scratch / f"{notebook}-seed{seed}" / "tables" / "smoke"
        _no_defense_table(tables, 80.0 + len(runs))
        return tables, "passed", 1.0

    monkeypatch.setattr(seed_spread, "_run_notebook", fake_run)
    frame_of = lambda: pd.read_csv(output_root() / "tables" / "reliability" / "seed_spread.csv")
    argv = ["--seeds", "1", "--notebooks", "attacks", "--scratch", str(tmp_path / "scratch")]
    assert seed_spread.main(argv) == 0 and runs == [("attacks", 1)]
    assert seed_spread.main(argv) == 0 and runs == [("attacks", 1)]  # continued: nothing rerun
    # a table edited after its run (as a changed check would read it) is read as it is now, not as logged
    _no_defense_table(tmp_path / "scratch" / "attacks-seed1" / "tables" / "smoke", 55.0)
    seed_spread.main(argv)
    row = frame_of().set_index("quantity").loc["badnets_dbd_2x2: ASR - CTR, no defense"]
    assert row["seed 0"] == 80.0 and row["seed 1"] == 45.0
    seed_spread.main(argv + ["--rerun", "attacks"])
    assert runs == [("attacks", 1), ("attacks", 1)]
    row = frame_of().set_index("quantity").loc["badnets_dbd_2x2: ASR - CTR, no defense"]
    assert row["seed 1"] == 72.0  # the rerun's table (80 + 2 runs - CTR 10)
    with pytest.raises(SystemExit):
        seed_spread.main(argv + ["--rerun", "nosuch"])


def test_a_run_over_some_notebooks_keeps_the_other_notebooks_rows_of_the_same_seeds(tmp_path):
    def table(rows, seeds):
        records = [{"notebook": nb, "quantity": q, "check": ">= 1", "value": v + s, "margin": v + s - 1, "seed": s}
                   for nb, q, v in rows for s in seeds]
        return seed_spread.spread_frame(records)
    previous = tmp_path / "seed_spread.csv"
    table([("attacks", "a1", 5.0), ("fct", "f1", 6.0), ("grid", "g1", 7.0)], [0, 1]).to_csv(previous, index=False)
    merged = seed_spread.keep_other_notebooks(table([("fct", "f1", 60.0)], [0, 1]), previous)
    assert list(merged["notebook"]) == ["attacks", "fct", "grid"]  # the notebooks' order, not the runs'
    assert list(merged["seed 1"]) == [6.0, 61.0, 8.0] and list(merged["passed"]) == ["2/2"] * 3
    # measured at other seeds: the previous table is not mixed in
    other_seeds = seed_spread.keep_other_notebooks(table([("fct", "f1", 60.0)], [0, 1, 2]), previous)
    assert list(other_seeds["notebook"]) == ["fct"]
    assert seed_spread.keep_other_notebooks(table([("fct", "f1", 1.0)], [0]), tmp_path / "none.csv").shape[0] == 1
