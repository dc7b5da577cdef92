"""The seed-spread study reads each notebook's checked quantities off a run's tables with the notebook's thresholds."""
import pandas as pd
import pytest

from backdoor_repro import seed_spread
from backdoor_repro.paths import project_root

COMMITTED = project_root() / "tables" / "smoke"


def test_the_committed_smoke_tables_pass_every_check_they_are_read_against():
    for notebook in seed_spread.SLICES:
        rows = seed_spread.read_checks(notebook, COMMITTED)
        assert rows, notebook
        assert all(r["margin"] >= 0 for r in rows), [r for r in rows if r["margin"] < 0]


def test_margins_are_signed_by_the_side_of_the_threshold():
    at_least = seed_spread.Check("x", "q", ">=", 60, lambda t: 0.0)
    at_most = seed_spread.Check("x", "q", "<=", 15, lambda t: 0.0)
    assert at_least.margin(70) == 10 and at_least.margin(55) == -5
    assert at_most.margin(5) == 10 and at_most.margin(20) == -5


def test_a_quantity_is_read_from_its_table(tmp_path):
    rows = [("badnets_dbd_2x2", "none", "ASR", 90.0), ("badnets_dbd_2x2", "none", "CTR", 10.0),
            ("badnets_dbd_2x2", "none", "ACC", 50.0), ("blend_kitty_dbd", "none", "ASR", 70.0),
            ("blend_kitty_dbd", "none", "CTR", 40.0), ("blend_kitty_dbd", "none", "ACC", 30.0)]
    pd.DataFrame(rows, columns=["attack", "defense", "metric", "value"]).to_csv(tmp_path / "no_defense.csv")
    got = {r["quantity"]: (r["value"], r["margin"]) for r in seed_spread.read_checks("attacks", tmp_path)}
    assert got["badnets_dbd_2x2: ASR - CTR, no defense"] == (80.0, 40.0)
    assert got["blend_kitty_dbd: ACC, no defense"] == (30.0, -5.0)


def test_the_spread_frame_counts_the_seeds_that_pass():
    records = [{"notebook": "a", "quantity": "q", "check": ">= 1", "value": v, "margin": v - 1, "seed": s}
               for s, v in enumerate([3.0, 0.5, 2.0])]
    frame = seed_spread.spread_frame(records)
    assert frame.loc[0, "passed"] == "2/3" and frame.loc[0, "min margin"] == pytest.approx(-0.5)
    assert [frame.loc[0, f"seed {s}"] for s in range(3)] == [3.0, 0.5, 2.0]
