"""resolve(): the one place that decides a run's rate, holdout, network, schedule, small-run cuts and precision."""
import pytest

from backdoor_repro.profiles import SMALL_RUN_SETTINGS, get_profile
from backdoor_repro.protocol import COMMON_HOLDOUT
from backdoor_repro.resolve import resolve


def test_the_profile_rate_applies_to_dirty_label_attacks_only(smoke_train):
    smoke = get_profile("smoke")
    assert resolve(smoke, smoke_train, "badnets_dbd_2x2").make_attack().rate == 0.1  # DBD's own: 5 %
    assert resolve(smoke, smoke_train, "lc_dbd").make_attack().rate == 0.25  # a fraction of the target class, kept
    assert resolve(smoke, smoke_train, "badnets_dbd_2x2", rate=0.2).make_attack().rate == 0.2  # the caller's wins


def test_own_and_common_protocols(smoke_train):
    smoke = get_profile("smoke")
    tr = resolve(smoke, smoke_train, "grid3_tr", "trap_and_replace")
    assert tr.model == "wrn16" and tr.holdout.rule == "last" and tr.no_defense_schedule.epochs == 10
    common = resolve(smoke, smoke_train, "badnets_dbd_2x2", "dbd", protocol="common")
    assert common.holdout == COMMON_HOLDOUT["smoke"] and common.make_attack().target == 0
    assert resolve(smoke, smoke_train, "grid3_tr", "trap_and_replace", protocol="common").model == "wrn16"
    fmp_common = resolve(smoke, smoke_train, "white3_bb", "fmp", protocol="common")
    assert fmp_common.model == smoke.model and fmp_common.normalization == "dbd"  # the common network
    with pytest.raises(ValueError, match="unknown protocol"):
        resolve(smoke, smoke_train, "grid3", "fmp", protocol="mine")
    with pytest.raises(ValueError, match="unknown defense"):
        resolve(smoke, smoke_train, "grid3", "nope")
    with pytest.raises(ValueError, match="clean model"):
        resolve(smoke, smoke_train, None, rate=0.1)


def test_small_runs_cut_the_schedule_and_the_width(smoke_train):
    fast = get_profile("fast")
    dry = resolve(fast, smoke_train, "grid3", "fct_dbr", small_run="dry_run")
    small = SMALL_RUN_SETTINGS["dry_run"]
    assert dry.no_defense_schedule.epochs == 1 and dry.no_defense_schedule.batch_size <= small.max_batch
    assert dry.width == small.width and dry.small_run == "dry_run"  # on the CPU
    assert dry.no_defense_schedule.optimizer == fast.no_defense_schedule.optimizer
    plumbing = resolve(get_profile("smoke"), smoke_train, "grid3", "trap_and_replace", small_run="plumbing")
    assert plumbing.width == 4 and plumbing.model == "wrn16" and plumbing.no_defense_schedule.epochs == 1
    with pytest.raises(ValueError, match="unknown small run"):
        resolve(fast, smoke_train, "grid3", small_run="tiny")
    assert dry.no_defense_stage() != dry.with_(small_run=None).no_defense_stage()  # never mixed with real runs


def test_a_profile_can_train_one_attacks_no_defense_model_longer(smoke_train):
    cpu = get_profile("cpu")
    longer = resolve(cpu, smoke_train, "blend_kitty_dbd")
    usual = resolve(cpu, smoke_train, "badnets_dbd_2x2")
    assert longer.no_defense_schedule.epochs == cpu.no_defense_epochs_for["blend_kitty_dbd"] > 30
    assert usual.no_defense_schedule == cpu.no_defense_schedule and usual.no_defense_schedule.epochs == 30
    assert longer.no_defense_schedule.with_(epochs=30) == usual.no_defense_schedule  # nothing else changes
    assert any("blend_kitty_dbd 40 epochs" in d for d in cpu.model_deviations)
    # a defense with its own No-Defense schedule keeps it; other profiles train every attack alike
    assert resolve(cpu, smoke_train, "blend_kitty_dbd", "fmp").no_defense_schedule.epochs == 30
    smoke = get_profile("smoke")
    assert resolve(smoke, smoke_train, "blend_kitty_dbd").no_defense_schedule == smoke.no_defense_schedule
