"""Tidy results schema, the reported-number name mapping and the reproduced-vs-reported join."""
import json
from pathlib import Path

import pandas as pd
import pytest

from backdoor_repro import report
from backdoor_repro.attacks import ATTACKS
from backdoor_repro.reported import ATTACK_NAMES, COLUMNS, load_reported

NOT_YET_REGISTERED = {"cl_fct", "ssba"}  # FCT's CL and SSBA come with the FCT notebook


def test_reported_names_map_to_registry_keys():
    for key in ATTACK_NAMES.values():
        assert key in ATTACKS or key in NOT_YET_REGISTERED, key
    df = load_reported()
    assert set(COLUMNS) <= set(df.columns) and len(df) > 400
    dbd = df[(df["table"] == "readme_results")]
    assert set(dbd[dbd["paper"] == "dbd"]["attack"]) == {"badnets_dbd_2x2", "blend_kitty_dbd"}
    assert set(dbd[dbd["paper"] == "dbd"]["defense"]) == {"none", "dbd"}


def test_tidy_rows_and_comparison():
    rows = [{"attack": "badnets_dbd_2x2", "metrics": {"ACC": 94.0, "ASR": 99.5}}]
    ours = report.tidy(rows, paper="attacks", table="no_defense", dataset="CIFAR-10", model="ResNet-18",
                       defense="none", profile="fast", seed=0)
    assert list(ours.columns[:10]) == report.TIDY_COLUMNS and len(ours) == 2
    reported = load_reported("dbd")
    cmp = report.compare_with_reported(ours, reported)
    acc = cmp[cmp["metric"] == "ACC"].iloc[0]
    assert acc["reported"] == pytest.approx(95.13) and acc["delta"] == pytest.approx(94.0 - 95.13)
    assert acc["source"] == "dbd:readme_results"


def test_tidy_requires_the_schema():
    with pytest.raises(ValueError, match="lacks columns"):
        report.tidy([{"attack": "x", "metrics": {"ACC": 1.0}}], paper="p")


def test_write_table_outputs_three_formats(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_OUTPUT", str(tmp_path))
    df = report.tidy([{"attack": "a", "metrics": {"ACC": 50.0}}], paper="p", table="t", dataset="d", model="m",
                     defense="none", profile="smoke", seed=0)
    paths = report.write_table(df, "demo", "smoke", index="attack", columns="metric")
    assert pd.read_csv(paths["csv"]).equals(df)
    assert "50.00" in paths["md"].read_text() and "tabular" in paths["tex"].read_text()
    assert paths["csv"].parent == tmp_path / "tables" / "smoke"


def test_mean_std_over_seeds_uses_the_sample_std_and_counts_the_seeds():
    rows = [{"attack": "a", "defense": d, "metric": m, "seed": s, "value": v}
            for d, m, values in (("none", "ASR", (90.0, 94.0, 98.0)), ("none", "ACC", (50.0, 50.0, 53.0)),
                                 ("tr", "ASR", (5.0,)))
            for s, v in enumerate(values)]
    view = report.mean_std(pd.DataFrame(rows), ["attack", "defense"]).set_index("defense")
    assert view.loc["none", "ASR"] == "94.00 ± 4.00"  # sample std of 90, 94, 98 (n - 1 = 2)
    assert view.loc["none", "ACC"] == "51.00 ± 1.73"
    assert view.loc["tr", "ASR"] == "5.00" and view.loc["tr", "seeds"] == 1  # one seed: no ± shown
    assert view.loc["none", "seeds"] == 3


def test_the_scale_line_names_profile_dataset_training_images_and_width():
    from backdoor_repro.experiment import setup
    assert report.scale_note("cpu", "cifar10", 50000, 8) == "cpu profile: CIFAR-10, 50,000 training images, network width 8"
    ex = setup("smoke", device="cpu", quiet=True)
    assert ex.scale("trap_and_replace") == "smoke profile: CIFAR-10, 5,000 training images, network width 8"


def test_a_warm_rerun_keeps_the_measured_run_time(tmp_path, monkeypatch):
    """The run record says how many stages the run trained and took from the cache; its ``timed_run`` is the last
    run that trained something, so a rerun that only read the cache never replaces a measured wall time. Under
    run_all.sh the previous record is the published one, not the (empty) staging folder's."""
    from backdoor_repro import cache
    published, staging = tmp_path / "published", tmp_path / "staging"
    monkeypatch.setenv("BACKDOOR_REPRO_PUBLISHED", str(published))

    def run(built: int, from_cache: int, seconds: float, into: Path) -> dict:
        monkeypatch.setenv("BACKDOOR_REPRO_OUTPUT", str(into))
        monkeypatch.setattr(cache, "STAGE_COUNTS", {"built": built, "from_cache": from_cache})
        path = report.write_run_record("nb", "smoke", seconds)
        return json.loads(path.read_text())

    measured = run(3, 1, 250.0, published)
    assert measured["stages"] == {"built": 3, "from_cache": 1}
    assert measured["timed_run"]["wall_seconds"] == 250.0 and measured["timed_run"]["stages"]["built"] == 3
    warm = run(0, 4, 6.5, staging)
    assert warm["wall_seconds"] == 6.5 and warm["timed_run"] == measured["timed_run"]
    assert run(0, 4, 6.0, tmp_path / "elsewhere-without-a-record")["timed_run"] == measured["timed_run"]
    monkeypatch.delenv("BACKDOOR_REPRO_PUBLISHED")
    assert run(0, 4, 6.0, tmp_path / "fresh")["timed_run"] is None  # never measured: said, not invented
    assert run(1, 3, 80.0, tmp_path / "fresh")["timed_run"]["wall_seconds"] == 80.0
