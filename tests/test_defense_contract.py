"""The defense contract, checked for every registered defense: registering a defense is what puts it
under test. Each runs its small-run smoke config (``Defense.small_config``) on a tiny real subset (width-4 network)."""
import math

import pytest
import torch

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.defenses import DEFENSES, NEEDS, Defense, DefenseResult, get_defense, register_defense
from backdoor_repro.defenses.base import PROFILE_NAMES
from backdoor_repro.stages import StageRecord
from defense_fixtures import tiny_data, tiny_spec

@pytest.mark.parametrize("key", sorted(DEFENSES))
def test_declarations(key):
    d = get_defense(key)
    assert d.key == key and d.paper and d.title
    assert set(d.needs) <= set(NEEDS)
    for profile in PROFILE_NAMES:
        d.config(profile)  # exists
        assert isinstance(d.deviations[profile], tuple) and all(isinstance(x, str) for x in d.deviations[profile])
    if "clean_holdout" in d.needs:
        assert d.holdout is not None


@pytest.mark.parametrize("key", sorted(DEFENSES))
def test_run_returns_a_defended_model_with_stage_records_and_is_cached(key, tiny, tmp_path):
    d = get_defense(key)
    spec, cache = tiny_spec(d, tiny), ArtifactCache(tmp_path)
    data = tiny_data(spec, tiny, cache)
    test = tiny[1]
    cfg = d.small_config("smoke")
    result = d.run(spec, data, cfg, cache)
    assert isinstance(result, DefenseResult) and result.stages
    assert not result.model.training
    with torch.no_grad():
        logits = result.model(test.images[:8].float() / 255)
    assert logits.shape == (8, 10) and torch.isfinite(logits).all()
    for name, record in result.stages.items():
        assert isinstance(record, StageRecord) and record.seconds > 0 and isinstance(record.history, list), name
        assert record.key and "model" not in record.extras, name
    n = len(data.train)
    if result.suspicion is not None:
        assert result.suspicion.shape == (n,) and torch.isfinite(result.suspicion).all()
    if result.flagged is not None:
        assert result.flagged.shape == (n,) and result.flagged.dtype == torch.bool
    detection = result.detection(data.train.poison_mask)
    assert all(0 <= v <= 100 for v in detection.values())
    if result.suspicion is not None:
        assert "AUROC" in detection

    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    again = d.run(spec, data, cfg, cache)
    assert files == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}  # every stage reused
    for a, b in zip(result.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert math.isclose(result.seconds, again.seconds)  # the recorded build time, not the load time


@pytest.mark.parametrize("key", sorted(DEFENSES))
def test_bad_input_is_refused_before_any_compute(key, tiny, tmp_path):
    d = get_defense(key)
    spec, cache = tiny_spec(d, tiny), ArtifactCache(tmp_path)
    other = tiny_data(tiny_spec(d, tiny, "badnets_dbd_2x2"), tiny, cache)
    cfg = d.small_config("smoke")
    with pytest.raises(ValueError, match="another spec"):
        d.run(spec, other, cfg, cache)
    with pytest.raises(ValueError, match="no attack"):
        d.run(spec.with_attack(None), other, cfg, cache)
    assert not list(tmp_path.rglob("*.pt"))  # nothing was trained
    with pytest.raises(ValueError, match="no config"):
        d.config("huge")


def test_registry_refuses_incomplete_defenses():
    class Incomplete(Defense):
        key, paper, title = "incomplete", "none", "a defense without configs"

    with pytest.raises(ValueError, match="no config"):
        register_defense(Incomplete())

    class NeedsMagic(Defense):
        key, paper, title = "magic", "none", "needs an oracle"
        needs = frozenset({"oracle"})
        configs = {p: None for p in PROFILE_NAMES}
        deviations = {p: () for p in PROFILE_NAMES}

    with pytest.raises(ValueError, match="unknown needs"):
        register_defense(NeedsMagic())

    class NoRecord(Defense):
        key, paper, title = "norecord", "none", "a defense that says nothing of its notebook"
        configs = get_defense("ft").configs
        deviations = {p: () for p in PROFILE_NAMES}

    with pytest.raises(ValueError, match="no protocol record"):
        register_defense(NoRecord())

    class BadSmallRun(NoRecord):
        key = "badsmall"
        record = get_defense("ft").record
        small_run = {"finetune": {"epoch": 1}}  # a typo: the field is "epochs"

    with pytest.raises(ValueError, match="no field epoch"):
        register_defense(BadSmallRun())
    with pytest.raises(ValueError, match="already registered"):
        register_defense(get_defense("dbd"))
    with pytest.raises(ValueError, match="unknown defense"):
        get_defense("nc")
    assert not {"incomplete", "magic", "norecord", "badsmall"} & set(DEFENSES)


def test_protocols_take_their_codes_settings_on_other_datasets():
    """FCT on CIFAR-100: the no-max-pool ResNet-18 and RandomRotation(15) for the attacker, D-BR without the flip.
    BackdoorBench (FMP and its baselines) off CIFAR-10: no flip; GTSRB 50 epochs of a T_max-100 cosine; FMP's
    random start 0.03. On CIFAR-10 nothing changes."""
    fct, fmp, anp = get_defense("fct_dbr"), get_defense("fmp"), get_defense("anp")
    assert fct.spec_changes_for("paper", "cifar10") == fct.spec_changes["paper"]
    c100 = fct.spec_changes_for("paper", "cifar100")
    assert c100["model"] == "resnet18" and c100["no_defense_schedule"].augmentation == "crop_flip_rotate15"
    assert fct.config("paper", "cifar100").br.augmentation == "crop"
    assert fct.config("paper", "cifar10") == fct.config("paper")
    assert fmp.spec_changes_for("fast", "cifar10") == fmp.spec_changes["fast"]
    gtsrb = fmp.spec_changes_for("paper", "gtsrb")["no_defense_schedule"]
    assert (gtsrb.epochs, gtsrb.schedule_epochs, gtsrb.augmentation, gtsrb.drop_last) == (50, 100, "crop", True)
    assert fmp.spec_changes_for("fast", "gtsrb")["no_defense_schedule"].epochs == 30
    assert fmp.spec_changes_for("paper", "cifar100")["no_defense_schedule"].epochs == 100
    cfg = fmp.config("paper", "gtsrb")
    assert cfg.alpha == 0.03 and cfg.finetune.augmentation == "crop"
    assert fmp.config("paper", "cifar10").alpha == 0.02
    assert anp.config("paper", "cifar100").augmentation == "crop" and anp.config("smoke", "cifar10-smoke") == anp.config("smoke")
    assert get_defense("fp").config("paper", "cifar100").finetune.augmentation == "crop"
