"""Cached pipeline stages on tiny settings: the run spec and its keys, label-consistent poisoning (clean
model -> PGD images, cached and reused), No-Defense models keyed by their spec, and the clean holdouts."""
import warnings

import numpy as np
import pytest
import torch

from backdoor_repro import get_profile
from backdoor_repro.cache import ArtifactCache
from backdoor_repro.data import ImageSet, class_balanced_subset
from backdoor_repro.pipeline import poisoned_training_set, run_data, no_defense_model
from backdoor_repro.resolve import resolve
from backdoor_repro.spec import Holdout, RunSpec
from backdoor_repro.train import TrainConfig

TINY_TRAIN = TrainConfig(epochs=1, batch_size=50, lr=0.05, augmentation="none")


def spec_for(attack, overrides=None, data_seed=0, seed=0, holdout=None, per_class=20):
    return RunSpec("cifar10-smoke", per_class, "resnet18", 4, 10, attack, overrides or {}, data_seed, seed,
                   TINY_TRAIN, holdout)


def test_label_consistent_poisoning_through_the_pipeline(smoke_train, tmp_path):
    train = class_balanced_subset(smoke_train, 20)  # 200 images, 20 of the target class (3)
    spec = spec_for("lc_dbd", {"steps": 3}).bound_to(train)
    cache = ArtifactCache(tmp_path)
    poisoned = poisoned_training_set(spec, train, cache, progress=False)
    idx = torch.nonzero(poisoned.poison_mask).flatten()
    assert len(idx) == 5 and (train.labels[idx] == 3).all()  # 25 % of the target class, labels kept
    assert torch.equal(poisoned.labels, train.labels)
    diff = poisoned.images[idx].int() - train.images[idx].int()
    body = diff[:, :, :29, :29]  # away from the trigger: the PGD perturbation, at most 16/255 (+ rounding)
    assert body.abs().max() <= 17 and body.abs().float().mean() > 1
    assert poisoned.images[idx][:, 0, 29:32, 31].tolist() == [[255, 0, 255]] * 5  # grid3 stamped after PGD
    assert len(list((tmp_path / "lc_images").glob("*.pt"))) == 1
    assert len(list((tmp_path / "no_defense").glob("*.pt"))) == 1  # the clean model behind the PGD step
    again = poisoned_training_set(spec, train, cache, progress=False)
    assert torch.equal(again.images, poisoned.images)


def test_supervised_models_are_keyed_by_their_spec(smoke_train, tmp_path):
    train = class_balanced_subset(smoke_train, 10)
    cache = ArtifactCache(tmp_path)
    spec = spec_for("grid3", {"rate": 0.2}, per_class=10).bound_to(train)
    _, record = no_defense_model(spec, train, cache, progress=False)
    assert record.extras["poison_count"] == 18 and record.seconds > 0 and len(record.history) == 1
    no_defense_model(spec, train, cache, progress=False)
    assert len(list((tmp_path / "no_defense").glob("*.pt"))) == 1  # reused
    no_defense_model(spec.with_(data_seed=1), train, cache, progress=False)  # another data_seed: another artifact
    no_defense_model(spec.with_(seed=1), train, cache, progress=False)  # another training seed: another artifact
    assert len(list((tmp_path / "no_defense").glob("*.pt"))) == 3


def test_the_spec_owns_one_seed_and_keys_poisoning_without_it(smoke_train):
    profile = get_profile("smoke")
    a = resolve(profile, smoke_train, "lc_dbd", data_seed=0, seed=0)
    b = resolve(profile, smoke_train, "lc_dbd", data_seed=0, seed=1)
    assert b.no_defense_schedule.seed == 1  # one seed, copied into the schedule
    assert RunSpec("d", None, "resnet18", 4, 10, None, seed=5,
                   no_defense_schedule=TrainConfig(seed=9)).no_defense_schedule.seed == 5
    other_pixels = smoke_train.subset(torch.arange(len(smoke_train)))
    other_pixels.images[0] ^= 1
    assert resolve(profile, other_pixels, "lc_dbd").data_fingerprint != a.data_fingerprint
    assert a.device_type == "cpu"
    assert a.data_stage() == b.data_stage()  # the training seed does not decide the poisoned set...
    assert a.context_stage() != b.context_stage() and a.no_defense_stage() != b.no_defense_stage()  # ...but trainings
    assert a.clean_model_for_poisoning() == b.clean_model_for_poisoning()
    assert a.clean_model_for_poisoning().seed == 0 and a.clean_model_for_poisoning().attack is None
    # LC images depend on the clean model and its schedule: the poisoned data's parents name it
    assert [p.name for p in a.data_stage().parents] == ["lc_images"]
    assert a.clean_model_for_poisoning().no_defense_stage() in a.data_stage().ancestors()
    assert a.with_attack("grid3").data_stage().parents == ()
    longer = a.with_(no_defense_schedule=a.no_defense_schedule.with_(epochs=21))
    assert longer.data_stage() != a.data_stage()  # a change upstream rebuilds everything downstream


@pytest.mark.parametrize("bad, message", [
    ({"attack": "nope"}, "unknown attack"),
    ({"attack_overrides": {"alpha": 0.3}}, "no parameter"),
    ({"seed": -1}, "seed"),
    ({"data_seed": "0"}, "data_seed"),
])
def test_bad_specs_are_errors(bad, message):
    fields = dict(dataset="cifar10-smoke", train_per_class=None, model="resnet18", width=4, num_classes=10,
                  attack="grid3")
    fields.update(bad)
    with pytest.raises(ValueError, match=message):
        RunSpec(**fields)


def test_holdout_validation():
    with pytest.raises(ValueError, match="fraction"):
        Holdout(1.5)
    with pytest.raises(ValueError, match="rule"):
        Holdout(0.05, "balanced")


def torchvision_ordered(n=400):
    """CIFAR-10-like: labels interleaved as in torchvision's order (not class by class), so rule 'last' applies."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 10, tuple(map(str, range(10))), "cifar10", "torchvision")


def test_last_holdout_is_the_tail_never_poisoned_and_rate_counts_the_whole_set(tmp_path):
    """T&R: the last 5 % is held out; the first int(rate x N_total) non-target samples of the rest are poisoned."""
    train = torchvision_ordered(400)
    spec = RunSpec("cifar10", None, "resnet18", 4, 10, "white4_tr", {"rate": 0.1}, 0, 0, TINY_TRAIN,
                   Holdout(0.05, "last")).bound_to(train)
    data = run_data(spec, train, None, ArtifactCache(tmp_path))
    assert len(data.train) == 380 and len(data.clean_holdout) == 20
    assert torch.equal(data.clean_holdout.images, train.images[380:]) and torch.equal(data.clean_holdout.labels, train.labels[380:])
    nontarget = torch.nonzero(train.labels[:380] != 0).flatten()
    assert torch.equal(torch.nonzero(data.train.poison_mask).flatten(), nontarget[:40])  # int(0.1 x 400), not 38
    images, labels = data.attacker_training_set()  # No Defense trains on split + holdout (all 400)
    assert len(images) == 400 and torch.equal(images[380:], train.images[380:])


def test_last_holdout_falls_back_to_a_seeded_shuffle_on_class_ordered_data(smoke_train, tmp_path):
    train = class_balanced_subset(smoke_train, 20)  # class by class: the last 5 % would be one class
    spec = spec_for("grid3_tr", {"rate": 0.1}, holdout=Holdout(0.05, "last")).bound_to(train)
    with pytest.warns(UserWarning, match="torchvision's order"):
        data = run_data(spec, train, None, ArtifactCache(tmp_path))
    assert len(data.train) == 190 and len(data.clean_holdout) == 10
    assert len(set(data.clean_holdout.labels.tolist())) > 3  # not one class
    poisoned_classes = set(data.train.true_labels[data.train.poison_mask].tolist())
    assert data.train.count == 20 and len(poisoned_classes) > 3  # "first N non-target" of a shuffled split
    held = {tuple(x.flatten()[:64].tolist()) for x in data.clean_holdout.images}
    assert not held & {tuple(x.flatten()[:64].tolist()) for x in data.train.images}  # disjoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = run_data(spec.with_(data_seed=1), train, None, ArtifactCache(tmp_path))
    assert not torch.equal(again.clean_holdout.images, data.clean_holdout.images)  # seeded by data_seed


def test_clean_subset_holdout_is_balanced_clean_and_inside_the_training_set(smoke_train, tmp_path):
    """FMP: a class-balanced draw from the clean training set with true labels; a sample the attacker poisoned
    may be drawn, as its clean original (FMP draws from BackdoorBench's clean_train)."""
    train = class_balanced_subset(smoke_train, 20)
    spec = spec_for("white3_bb", {"rate": 0.2}, holdout=Holdout(0.1, "clean_subset")).bound_to(train)
    data = run_data(spec, train, None, ArtifactCache(tmp_path))
    assert len(data.train) == 200 and len(data.clean_holdout) == 20
    assert np.bincount(data.clean_holdout.labels.numpy(), minlength=10).tolist() == [2] * 10
    assert (data.train.images[data.train.poison_mask][:, :, 29:, 29:] == 255).all()  # the white 3x3 patch...
    assert not (data.clean_holdout.images[:, :, 29:, 29:] == 255).flatten(1).all(1).any()  # ...on no holdout image
    for img, label in zip(data.clean_holdout.images, data.clean_holdout.labels):  # each is a clean training image, true label
        match = (train.images == img).flatten(1).all(1)
        assert match.any() and (train.labels[match] == label).all()
    assert data.attacker_training_set()[0].shape[0] == 200  # the attacker's model saw them too


def test_holdouts_with_clean_label_attacks_that_take_the_whole_target_class(smoke_train, tmp_path):
    """sig_bb poisons every target-class image: the FMP subset still gets its target-class share (clean
    originals), and under a split-off holdout the BackdoorBench count is capped at the split's class."""
    train = class_balanced_subset(smoke_train, 20)
    fmp = run_data(spec_for("sig_bb", holdout=Holdout(0.1, "clean_subset")).bound_to(train), train, None,
                   ArtifactCache(tmp_path))
    assert (fmp.clean_holdout.labels == 0).sum() == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = run_data(spec_for("sig_bb", holdout=Holdout(0.1, "last")).bound_to(train), train, None,
                         ArtifactCache(tmp_path))
    assert split.train.count == int((split.train.labels == 0).sum()) < 20  # all target images of the split


def test_data_from_another_training_set_is_refused(smoke_train, tmp_path):
    train = class_balanced_subset(smoke_train, 20)
    spec = spec_for("grid3", {"rate": 0.1}).bound_to(train)
    with pytest.raises(ValueError, match="not the one this spec was built from"):
        run_data(spec, class_balanced_subset(smoke_train, 30), None, ArtifactCache(tmp_path))
    with pytest.raises(ValueError, match="not the one this spec was built from"):
        no_defense_model(spec.with_attack(None), class_balanced_subset(smoke_train, 30), ArtifactCache(tmp_path))
    relabelled_order = smoke_train.subset(torch.arange(len(smoke_train)))  # same pixels, order "subset"
    assert relabelled_order.order != smoke_train.order
    assert (resolve(get_profile("smoke"), relabelled_order, "grid3").data_fingerprint
            != resolve(get_profile("smoke"), smoke_train, "grid3").data_fingerprint)


def test_no_defense_model_is_shared_across_holdouts_that_do_not_change_its_data(smoke_train, tmp_path):
    """FMP's clean subset does not change what the attacker trained on: one No-Defense artifact."""
    train = class_balanced_subset(smoke_train, 10)
    cache = ArtifactCache(tmp_path)
    spec = spec_for("grid3", {"rate": 0.2}, per_class=10).bound_to(train)
    no_defense_model(spec, train, cache, progress=False)
    no_defense_model(spec.with_(holdout=Holdout(0.1, "clean_subset")), train, cache, progress=False)
    assert len(list((tmp_path / "no_defense").glob("*.pt"))) == 1
    clean = spec.with_attack(None)
    no_defense_model(clean, train, cache, progress=False)
    no_defense_model(clean.with_(data_seed=3), train, cache, progress=False)  # data_seed means nothing to it
    assert len(list((tmp_path / "no_defense").glob("*.pt"))) == 2


def test_equivalent_attack_descriptions_share_one_spec():
    """Overrides equal to the attack's defaults are dropped, so the same attack keys the same artifacts."""
    plain = spec_for("grid3", {"rate": 0.1})
    spelled_out = spec_for("grid3", {"rate": 0.1, "target": 0, "selection": "random_nontarget"})
    assert plain == spelled_out and plain.attack_overrides == {}
    assert spec_for("grid3", {"rate": 0.2}).attack_overrides == {"rate": 0.2}
    with pytest.raises(ValueError, match="without an attack"):
        RunSpec("d", None, "resnet18", 4, 10, None, {"rate": 0.1})


def test_a_clean_subset_of_a_tiny_set_still_holds_an_image_of_every_class(smoke_train):
    """A dry run's 10 images per class: 5 % rounds to none per class; an empty holdout left every defense that reads
    one (T&R, FMP, FT, FP, ANP) nothing to train on under the grid's common protocol."""
    from backdoor_repro.holdout import clean_subset
    held = clean_subset(class_balanced_subset(smoke_train, 10), Holdout(0.05, "clean_subset"), 0)
    assert sorted(held.labels.tolist()) == list(range(10))
    assert len(clean_subset(smoke_train, Holdout(0.1, "clean_subset"), 0)) == 500  # unchanged where it rounds to one or more
