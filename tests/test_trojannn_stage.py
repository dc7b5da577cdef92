"""TrojanNN's trigger stage (``trojannn_bb``): the registry's attack refuses to poison until its pattern is optimised
on the clean model; a tiny run end to end on the CPU (the clean model, the ``trojannn_trigger`` stage built once and
reused, the poisoned set, evaluation through ``evaluated_attack``, FT on top); the keys follow the search's settings
and leave every other attack's alone. The optimisation itself: test_trojannn_bb.py."""
import numpy as np
import pytest
import torch

from backdoor_repro.attacks import get_attack
from backdoor_repro.attacks.trojannn import SMALL_RUN_STEPS, TrojanSearch, optimised_pattern
from backdoor_repro.cache import ArtifactCache
from backdoor_repro.defenses import DEFENSES
from backdoor_repro.evaluation import evaluate, evaluated_attack
from backdoor_repro.pipeline import no_defense_model, run_data
from backdoor_repro.spec import Holdout, RunSpec
from backdoor_repro.train import TrainConfig

pytestmark = pytest.mark.timeout(120)
STEPS = 3  # sign steps of the search in these tests (BackdoorBench: 1,000)


def tiny_spec(tiny, **overrides) -> RunSpec:
    schedule = TrainConfig(epochs=1, batch_size=50, lr=0.05, schedule="cosine", augmentation="none")
    return RunSpec("cifar10-smoke", 20, "preact_resnet18", 4, 10, "trojannn_bb", {"steps": STEPS, **overrides}, 0, 0,
                   schedule, Holdout(0.1, "clean_subset"), normalization="backdoorbench").bound_to(tiny[0])


def test_the_registry_attack_waits_for_its_pattern(tiny):
    attack = get_attack("trojannn_bb")
    assert attack.trigger_from_clean_model and attack.trigger_search == TrojanSearch()
    assert not get_attack("grid3").trigger_from_clean_model
    with pytest.raises(ValueError, match="optimised on the clean model"):
        attack.poison(tiny[0], data_seed=0)
    with pytest.raises(ValueError, match="optimised on the clean model"):
        attack.test_population(tiny[1])
    for bad in ({"steps": 0}, {"num_neurons": 1.5}, {"eps": -0.1}, {"step": "big"}):
        with pytest.raises(ValueError, match="trojannn_bb"):
            get_attack("trojannn_bb", **bad)


def test_the_trigger_stage_is_keyed_by_the_search_and_hangs_off_the_clean_model(tiny):
    spec = tiny_spec(tiny)
    stage = spec.trigger_stage()
    assert stage.name == "trojannn_trigger" and stage.config["image_size"] == 32
    assert stage.parents == (spec.clean_model_for_poisoning().no_defense_stage(),)
    assert stage in spec.data_stage().parents and stage in spec.no_defense_stage().ancestors()
    others = [tiny_spec(tiny, **o) for o in ({"steps": STEPS + 1}, {"eps": 0.2}, {"num_neurons": 3},
                                             {"target_value": 50.0})] + [spec.with_(data_seed=1)]
    keys = {stage.key} | {s.trigger_stage().key for s in others}
    assert len(keys) == 1 + len(others)
    assert len({spec.data_stage().key} | {s.data_stage().key for s in others}) == 1 + len(others)
    assert spec.with_(seed=3).trigger_stage().key == stage.key  # the clean model is seeded by the data seed
    assert spec.with_(small_run="dry_run").trigger_stage().key != stage.key  # a small run's cut search: its own key
    plain = spec.with_attack("grid3")
    assert plain.data_stage().parents == ()  # a fixed trigger's poisoned set has no trigger stage
    with pytest.raises(ValueError, match="does not depend on a model"):
        plain.trigger_stage()


def test_bad_specs_fail_before_any_compute(tiny, tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ValueError, match="preact_resnet18"):
        run_data(tiny_spec(tiny).with_(model="resnet18"), *tiny, cache)
    with pytest.raises(ValueError, match="neurons"):
        run_data(tiny_spec(tiny, num_neurons=40), *tiny, cache)  # width 4: 32 features
    spec = tiny_spec(tiny)
    with pytest.raises(ValueError, match="pass the cache"):
        evaluated_attack(spec)
    with pytest.raises(ValueError, match="not in the cache"):
        evaluated_attack(spec, cache)
    assert not list(tmp_path.rglob("*.pt"))


@pytest.mark.timeout(300)
def test_a_tiny_run_end_to_end(tiny, tmp_path, monkeypatch):
    spec, cache = tiny_spec(tiny), ArtifactCache(tmp_path)
    data = run_data(spec, *tiny, cache)
    assert cache.path(spec.trigger_stage()).exists()
    clean, _ = no_defense_model(spec.clean_model_for_poisoning(), tiny[0], cache, False)  # from the cache
    expected = optimised_pattern(clean, seed=0, size=32, steps=STEPS)["pattern"]
    attack = evaluated_attack(spec, cache)
    assert torch.equal(attack.trigger.pattern, expected.double())
    poisoned = data.train
    assert poisoned.count == round(0.1 * len(tiny[0])) and (poisoned.labels[poisoned.poison_mask] == 0).all()
    picked = tiny[0].images[poisoned.poison_mask]
    assert torch.equal(poisoned.images[poisoned.poison_mask], attack.trigger.apply(picked))
    assert not torch.equal(poisoned.images[poisoned.poison_mask], picked)

    def refuse(*args, **kwargs):
        raise AssertionError("the trigger stage is cached: it must not be optimised again")

    monkeypatch.setattr(TrojanSearch, "optimise", refuse)
    again = run_data(spec, *tiny, cache)
    assert torch.equal(again.train.images, poisoned.images)
    model, record = no_defense_model(spec, None, cache, False, data=data)
    assert record.stage == "no_defense" and record.extras["poison_count"] == poisoned.count
    scores = evaluate(model, spec, tiny[1], cache)
    assert set(scores) >= {"ACC", "ASR", "RA", "CTR"} and 0 <= scores["ASR"] <= 100
    ft = DEFENSES["ft"]
    result = ft.run(spec, data, ft.small_config("smoke"), cache)
    assert result.stages["no_defense"].key == record.key
    assert np.isfinite(evaluate(result.model, spec, tiny[1], cache)["ASR"])


def test_a_small_run_cuts_the_search_to_a_couple_of_steps(tiny):
    assert TrojanSearch().for_run(small_run=True) == TrojanSearch(steps=SMALL_RUN_STEPS)
    assert TrojanSearch(steps=1).for_run(small_run=True).steps == 1 and TrojanSearch().for_run(False) == TrojanSearch()
    stage = tiny_spec(tiny, steps=1000).with_(small_run="dry_run").trigger_stage()
    assert stage.config["search"].steps == SMALL_RUN_STEPS  # the stage says what it ran
