"""FCT against the official code's rules, written out here from its formulas (SCLBD/Effective_backdoor_defense
@ 63fda0e): the two-pass sample split with its ties (``calculate_gamma.py``, ``separate_samples.py``), the collapse
guard off on every profile, and the epochs the official D-BR and D-ST keep (test-selected), which the T1 table shows
beside the last ones."""
import dataclasses

import pandas as pd
import pytest
import torch

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.defenses import get_defense
from backdoor_repro.defenses.fct import (FCT_DEVIATIONS, FCT_PROFILES, _guard_deviation, classifier_oracle_epoch,
                                         classifier_stage, oracle_epoch, selected_epoch_metrics)
from backdoor_repro.defenses.base import PROFILE_NAMES
from backdoor_repro.defenses.fct_sd import SDConfig, split_samples
from backdoor_repro.fct_tables import TEST_SELECTED, compare_t1
from backdoor_repro.reported import claims
from defense_fixtures import tiny_data, tiny_spec


def _official_split(first, second, clean_ratio=0.20, poison_ratio=0.05):
    """The official SD-4 and SD-5 as plain Python: sort the first pass ascending, gamma_low at index
    int(N * clean_ratio), gamma_high at index N - int(N * poison_ratio); then for each second-pass score
    ``if s <= gamma_low: 0 elif s >= gamma_high: 2 else: 1``."""
    values = sorted(float(v) for v in first)
    n = len(values)
    gamma_low, gamma_high = values[int(n * clean_ratio)], values[n - int(n * poison_ratio)]
    flags = []
    for value in (float(v) for v in second):
        if value <= gamma_low:
            flags.append(0)
        elif value >= gamma_high:
            flags.append(2)
        else:
            flags.append(1)
    return flags, gamma_low, gamma_high


def _passes(n, zero_share, plateau=None, seed=0):
    """Two FCT passes over ``n`` samples, each with exactly ``zero_share`` of its scores 0 (the reported collapse)
    and the rest positive (or all equal to ``plateau``); the second pass keeps about half of the first's values (so
    ties with the thresholds recur) and redraws the rest."""
    gen = torch.Generator().manual_seed(seed)

    def draw():
        values = torch.rand(n, generator=gen) * 5 + 1e-3 if plateau is None else torch.full((n,), float(plateau))
        values[torch.randperm(n, generator=gen)[:int(zero_share * n)]] = 0
        return values

    first = draw()
    return first, torch.where(torch.rand(n, generator=gen) < 0.5, first, draw())


@pytest.mark.parametrize("zero_share, plateau, thresholds", [
    (0.0, None, "distinct"),
    (0.3, None, "gamma_c = 0 < gamma_p"),
    (0.85, None, "gamma_c = 0 < gamma_p"),
    (0.97, None, "gamma_c = gamma_p = 0"),
    (0.1, 0.5, "gamma_c = gamma_p = 0.5"),
])
def test_the_two_pass_split_is_the_official_rule_flag_for_flag(zero_share, plateau, thresholds):
    first, second = _passes(1000, zero_share, plateau)
    want, gamma_low, gamma_high = _official_split(first.tolist(), second.tolist())
    flags, gamma_c, gamma_p = split_samples(first, second, SDConfig())
    assert (gamma_c, gamma_p) == (gamma_low, gamma_high)
    assert {"distinct": gamma_c < gamma_p, "gamma_c = 0 < gamma_p": gamma_c == 0 < gamma_p,
            "gamma_c = gamma_p = 0": gamma_c == gamma_p == 0,
            "gamma_c = gamma_p = 0.5": gamma_c == gamma_p == 0.5}[thresholds]
    assert flags.tolist() == want
    if gamma_c >= gamma_p:  # every sample meets one threshold at least: the code's D_c wins where both hold
        assert 1 not in want and want.count(0) == int((second <= gamma_c).sum())


def test_the_collapse_guard_is_off_and_unlisted_on_every_profile():
    for name in PROFILE_NAMES:
        for key in ("fct_dst", "fct_dbr"):
            assert get_defense(key).config(name).sd.rank_if_ties_above is None, (key, name)
        assert FCT_PROFILES[name].sd.rank_if_ties_above is None
        assert not any("collapse guard" in d for d in FCT_DEVIATIONS[name]), name
    assert SDConfig().rank_if_ties_above is None
    guarded = FCT_PROFILES["smoke"].with_(sd={"rank_if_ties_above": 0.01})
    listed, = _guard_deviation(guarded)
    assert listed.startswith("collapse guard") and "1 %" in listed


def _history(rows):
    return [{"epoch": e, "ACC": acc, "ACC_no_target": acc_nt, "ASR": asr} for e, acc, acc_nt, asr in rows]


def test_the_kept_epochs_follow_each_official_script():
    """D-BR keeps the largest ACC (non-target images) - ASR, D-ST's classifier the largest ACC on every test image;
    both save only on a strict improvement over the best so far, which starts at 0."""
    history = _history([(0, 99.0, 99.0, 0.0),  # before BR: never kept
                        (1, 50.0, 40.0, 10.0), (2, 60.0, 55.0, 30.0), (3, 60.0, 52.0, 2.0), (4, 58.0, 60.0, 10.0)])
    assert oracle_epoch(history)["epoch"] == 3  # 50 at epochs 3 and 4: the earliest
    assert classifier_oracle_epoch(history)["epoch"] == 2  # ACC 60 at 2 and 3; not ACC_no_target (4), not ACC - ASR
    all2all = [{k: v for k, v in h.items() if k != "ACC_no_target"} for h in history]
    assert oracle_epoch(all2all)["epoch"] == 3  # ACC - ASR: 58 at epoch 3
    assert oracle_epoch(_history([(1, 20.0, 20.0, 50.0)])) == {}  # nothing beats 0: the code saves nothing
    assert classifier_oracle_epoch(_history([(1, 0.0, 0.0, 0.0)])) == {}


def test_t1_joins_the_test_selected_dst_row_with_the_readme_dst_numbers():
    rows = [{"dataset": "CIFAR-10", "attack": "grid3", "defense": d, "metric": m, "value": v}
            for d in ("none", "fct_dbr", "fct_dst", "fct_dbr" + TEST_SELECTED, "fct_dst" + TEST_SELECTED)
            for m, v in (("ACC", 30.0), ("ASR", 5.0), ("ACC_no_target", 29.0))]
    joined = compare_t1(pd.DataFrame(rows), claims("fct", table="readme_results", dataset="CIFAR-10"))
    assert joined["reported"].notna().all(), joined
    assert list(joined["defense"].drop_duplicates()) == ["none", "fct_dbr", "fct_dst", "fct_dbr" + TEST_SELECTED,
                                                         "fct_dst" + TEST_SELECTED]
    reported = joined.set_index(["defense", "metric"])["reported"]
    assert reported[("fct_dst" + TEST_SELECTED, "ASR")] == reported[("fct_dst", "ASR")] == 0.03  # README: 92.77 / 0.03
    assert reported[("fct_dst" + TEST_SELECTED, "ACC")] == reported[("fct_dst", "ACC")] == 92.77


def test_the_dst_classifier_is_evaluated_every_epoch_without_changing_its_training(tiny, tmp_path):
    """The test set joins the classifier's key (its history depends on it), the weights do not depend on it, and the
    test-selected metrics are those of the kept epoch."""
    d = get_defense("fct_dst")
    spec, cache = tiny_spec(d, tiny), ArtifactCache(tmp_path)
    data = tiny_data(spec, tiny, cache)
    cfg = d.small_config("smoke").with_(classifier={"epochs": 3})
    result = d.run(spec, data, cfg, cache)
    history = result.stages["classifier"].history
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all({"ACC", "ASR", "ACC_no_target"} <= set(h) for h in history)
    kept = classifier_oracle_epoch(history)
    want = {k: kept[k] for k in ("ACC", "ASR", "RA", "ACC_no_target", "CTR")}
    assert selected_epoch_metrics("fct_dst", result) == want
    blind, record = classifier_stage(spec, dataclasses.replace(data, test=None), cfg, cache)
    assert record.key != result.stages["classifier"].key and "ACC" not in record.history[-1]
    for a, b in zip(result.model.state_dict().values(), blind.state_dict().values()):
        assert torch.equal(a, b)
