"""The grid's common protocol (one network, rate, target and holdout for every cell), the own-protocol cells that
equal the paper notebooks' specs, the read-only cache, and the notebook's tables computed from hand-made records."""
import pytest

from backdoor_repro import grid_report
from backdoor_repro.orchestration import grid
from backdoor_repro.cache import ArtifactCache, NotCached
from backdoor_repro.experiment import setup
from backdoor_repro.graph import Stage
from backdoor_repro.orchestration.grid import Cell, GridSettings, run_grid
from backdoor_repro.protocol import COMMON_HOLDOUT, common_overrides


@pytest.fixture(scope="module")
def ex():
    return setup("smoke", device="cpu", quiet=True)


def test_common_protocol_gives_every_defense_the_same_data_network_and_attacker(ex):
    specs = {d: ex.spec("badnets_dbd_2x2", d, protocol="common") for d in grid.ALL_DEFENSES}
    for d, spec in specs.items():
        attack = spec.make_attack()
        assert (attack.rate, attack.target) == (0.1, 0), d  # DBD's own BadNets: 5 %, class 3
        assert spec.holdout == COMMON_HOLDOUT["smoke"] and not spec.holdout.disjoint, d
    others = {d: s for d, s in specs.items() if d != "trap_and_replace"}
    assert {(s.model, s.width, s.normalization, s.no_defense_schedule) for s in others.values()} == {
        (ex.profile.model, ex.profile.width, "dbd", ex.profile.no_defense_schedule)}
    assert len({s.data_stage().key for s in specs.values()}) == 1  # one poisoned set
    assert len({s.no_defense_stage().key for s in others.values()}) == 1  # one No-Defense model
    assert specs["trap_and_replace"].model == "wrn16"  # the listed exception
    # the holdout does not change the attacker's model: it is the attacks notebook's one where settings match
    assert ex.spec("grid3", "fmp", protocol="common").no_defense_stage() == ex.spec("grid3").no_defense_stage()
    # ...but it is what the defender is granted
    assert ex.spec("grid3", "fmp", protocol="common").granted_stage() != ex.spec("grid3").granted_stage()


def test_own_protocol_is_exactly_what_each_paper_notebook_runs(ex):
    cell = grid.Cell("fmp", "white3_bb", protocol="own")
    settings = GridSettings("smoke", device="cpu")
    assert grid.cell_spec(cell, settings, ex)[1] == ex.spec("white3_bb", defense="fmp")
    assert ex.spec("badnets_dbd_2x2", "dbd", protocol="own") == ex.spec("badnets_dbd_2x2", defense="dbd")
    assert ex.spec("grid3", "fct_dbr", protocol="own") == ex.spec("grid3", defense="fct_dst")
    tr = ex.spec("grid3_tr", "trap_and_replace", protocol="own")
    assert tr == ex.spec("grid3_tr", defense="trap_and_replace") and tr.holdout.disjoint
    with pytest.raises(ValueError, match="unknown protocol"):
        ex.spec("grid3", "fmp", protocol="mine")


def test_common_overrides_respect_clean_label_and_all_to_all_attacks():
    assert common_overrides("grid3") == {"target": 0, "rate": 0.1}
    assert common_overrides("lc_dbd") == {"target": 0}  # its rate is a fraction of the target class
    assert common_overrides("white3_fct") == {"rate": 0.1}  # all-to-all: no target


def test_a_read_only_cache_never_builds(tmp_path):
    calls = []
    ArtifactCache(tmp_path).get_or_build(Stage("s", {"k": 1}, 1), lambda _p: calls.append(1) or {"x": 1})
    read_only = ArtifactCache(tmp_path, build=False)
    assert read_only.get_or_build(Stage("s", {"k": 1}, 1), lambda _p: calls.append(1)) == {"x": 1}
    with pytest.raises(NotCached, match="not in the cache"):
        read_only.get_or_build(Stage("s", {"k": 2}, 1), lambda _p: calls.append(1))
    assert calls == [1] and len(list((tmp_path / "s").glob("*.pt"))) == 1
    assert len(list((tmp_path / "s").glob("*.lock"))) == 1  # the first build's; the miss takes no lock


def test_own_cells_read_only_report_not_cached_without_training(tmp_path):
    cells = [Cell("ft", "white3_bb", protocol="own")]
    settings = GridSettings("smoke", device="cpu", plumbing=True, cache_root=str(tmp_path / "c"), reuse_only=True)
    report = run_grid(cells, settings, tmp_path / "g", "inline", log=lambda *_: None)
    assert list(report.failed.values())[0].startswith("NotCached")
    assert not list((tmp_path / "c").rglob("*.pt"))


def _record(defense, attack, acc, asr, nd_acc, nd_asr, protocol="common", seed=0, model="resnet18"):
    der = (max(0.0, nd_asr - asr) - max(0.0, nd_acc - acc) + 100) / 2
    return {"cell": {"defense": defense, "attack": attack, "dataset": "default", "seed": seed, "protocol": protocol},
            "protocol": protocol, "profile": "smoke", "dataset": "cifar10-smoke", "plumbing": False, "model": model,
            "metrics": {"ACC": acc, "ASR": asr}, "no_defense": {"ACC": nd_acc, "ASR": nd_asr}, "DER": der}


def test_tables_from_hand_made_records():
    records = [_record("none", "grid3", 90, 100, 90, 100), _record("ft", "grid3", 88, 40, 90, 100),
               _record("fmp", "grid3", 80, 2, 90, 100), _record("fmp", "grid3", 82, 4, 90, 100, seed=1),
               _record("dbd", "badnets_dbd_2x2", 85, 1, 90, 100, protocol="own"),
               {**_record("ft", "grid3", 0, 0, 0, 0), "plumbing": True}]
    common = grid_report.records_frame(records, "common", "smoke", "cifar10-smoke")
    means = grid_report.seed_mean(common)
    # DER (98 - 10 + 100) / 2 = 94 and (96 - 8 + 100) / 2 = 94 over the two seeds; ft: (60 - 2 + 100) / 2 = 79
    assert means.loc[("fmp", "grid3"), "ASR"] == 3 and means.loc[("fmp", "grid3"), "DER"] == 94
    assert means.loc[("ft", "grid3"), "DER"] == 79 and means.loc[("ft", "grid3"), "ND ASR"] == 100
    ranks = grid_report.ranking(common)
    assert list(ranks["defense"]) == ["fmp", "ft"] and list(ranks["rank"]) == [1, 2]
    own = grid_report.records_frame(records, "own", "smoke", "cifar10-smoke")
    cross = grid_report.cross_paper(["dbd", "ft", "fmp"], own, common)
    dbd_asr = cross[(cross["defense"] == "dbd") & (cross["attack"] == "badnets_dbd_2x2") & (cross["metric"] == "ASR")]
    assert len(dbd_asr) >= 1 and (dbd_asr["ours, own protocol"] == 1).all()
    assert dbd_asr["ours, common protocol"].isna().all() and dbd_asr["claimed"].notna().all()
    assert set(cross["defense"]) <= {"dbd", "ft", "fmp"}
    # FCT's ACC is on the non-target images: its claims (and DBD's numbers it re-ran) read our ACC_no_target
    fct_records = [{**_record("fct_dst", a, 40, 5, 90, 100, protocol="own")} for a in ("grid3", "white3_fct")]
    fct_records[0]["metrics"]["ACC_no_target"] = 33.0  # white3_fct (all-to-all) has no target: no ACC_no_target
    fct_own = grid_report.records_frame(fct_records, "own", "smoke", "cifar10-smoke")
    fct_cross = grid_report.cross_paper(["fct_dst"], fct_own, common).set_index(["attack", "metric", "claim"])
    grid3_acc = fct_cross.xs(("grid3", "ACC"), level=("attack", "metric"))
    assert (grid3_acc["ours, own protocol"] == 33.0).all() and (grid3_acc["ours measured as"] == "ACC_no_target").all()
    white3_acc = fct_cross.xs(("white3_fct", "ACC"), level=("attack", "metric"))
    assert (white3_acc["ours, own protocol"] == 40.0).all() and (white3_acc["ours measured as"] == "ACC").all()
    assert (fct_cross.xs(("grid3", "ASR"), level=("attack", "metric"))["ours, own protocol"] == 5.0).all()
    fig = grid_report.heatmaps(common)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3 and len(fig.axes) == 6  # each panel with its colour bar
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in panels] == [("attack", "defense")] * 3


def test_cross_paper_table_states_each_claimed_number_once_without_an_empty_column():
    """FCT's README and paper, and DBD's numbers re-run by the FCT authors (listed in both papers' files), quote the
    same numbers: one row each, naming every source; a protocol no cell has run is left out of the written table."""
    import pandas as pd
    records = [_record("dbd", "grid3", 40, 30, 90, 100, protocol="own")]
    own = grid_report.records_frame(records, "own", "smoke", "cifar10-smoke")
    cross = grid_report.cross_paper(["dbd", "fct_dbr", "fct_dst"], own, own.iloc[:0])
    assert not cross.duplicated(["defense", "attack", "metric", "claimed"]).any()
    dbd_grid3 = cross[(cross["defense"] == "dbd") & (cross["attack"] == "grid3") & (cross["metric"] == "ASR")]
    assert len(dbd_grid3) == 1 and dbd_grid3["claim"].iloc[0].count("; ") == 1
    assert dbd_grid3["ours, own protocol"].iloc[0] == 30
    written, empty = grid_report.without_empty_columns(cross)
    assert empty == ["ours, common protocol"] and "ours, own protocol" in written
    text = grid_report.conclusion(written, pd.DataFrame(columns=["attack", "rank", "defense"]), "smoke profile")
    assert f"claim {len(cross)} per-attack numbers" in text
    assert "2 have our run in the claim's own protocol" in text  # its ACC and ASR
    assert "0 our run under the common protocol" in text


def test_the_committed_cross_paper_table_has_no_repeated_claim_and_no_empty_column():
    from pathlib import Path
    import pandas as pd
    for path in sorted((Path(__file__).resolve().parents[1] / "tables").glob("*/grid_cross_paper.csv")):
        table = pd.read_csv(path)
        assert not table.drop(columns="claim").duplicated().any(), path
        assert not [c for c in table.columns if table[c].isna().all()], path


@pytest.mark.slow
def test_every_registered_defense_runs_under_the_common_protocol(tmp_path):
    from backdoor_repro.defenses import DEFENSES
    cells = grid.make_cells(sorted(DEFENSES), ["grid3"])
    settings = GridSettings("smoke", device="cpu", plumbing=True, cache_root=str(tmp_path / "c"))
    report = run_grid(cells, settings, tmp_path / "g", "inline", log=lambda *_: None)
    assert not report.failed and len(report.ran) == len(DEFENSES)
    models = {r["cell"]["defense"]: r["model"] for r in grid.GridStore(tmp_path / "g").records()}
    assert models.pop("trap_and_replace") == "wrn16" and set(models.values()) == {"resnet18"}


def test_a_spec_carries_its_own_precision_whatever_the_process_state(ex):
    """The precision is a field of the spec, decided by resolve(); no key reads the process state, and running or
    evaluating a spec sets the process state from it (a paper dry run in the same kernel leaks nothing)."""
    from backdoor_repro.numerics import cpu_numerics
    from backdoor_repro.train import cpu_autocast, enable_cpu_autocast, gpu_bf16, set_gpu_bf16
    try:
        set_gpu_bf16(False)
        enable_cpu_autocast(True)  # as a dry run of a bf16 profile leaves it where the CPU has native bf16
        spec = ex.spec("grid3")
        assert spec.precision == "fp32" and spec.numerics == cpu_numerics()
        spec.apply_numerics()
        assert not cpu_autocast()
        assert spec.with_(device_type="cuda", precision="bf16").apply_numerics() is None and gpu_bf16()
    finally:
        set_gpu_bf16(True)
        enable_cpu_autocast(False)
