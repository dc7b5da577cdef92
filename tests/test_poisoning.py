"""Poison counts, populations and labels for every selection rule and label mode (attacks.md §2)."""
import numpy as np
import pytest
import torch

from backdoor_repro.attacks import ATTACKS, get_attack, keys_for_size, select_poison

LABELS = np.repeat(np.arange(10), 100)  # 1,000 samples, 100 per class


def test_bernoulli_nontarget_picks_only_nontarget_at_the_rate():
    idx = select_poison(LABELS, 3, "bernoulli_nontarget", 0.2, data_seed=1)
    assert (LABELS[idx] != 3).all()
    assert 120 <= len(idx) <= 240  # 900 candidates at p = 0.2 -> 180 expected


def test_first_n_nontarget_is_deterministic_index_order():
    labels = np.array([0, 1, 0, 2, 3, 0, 4, 5, 6, 7])
    idx = select_poison(labels, 0, "first_n_nontarget", 0.3, data_seed=123)
    assert idx.tolist() == [1, 3, 4]  # int(0.3 * 10) = 3 first non-target samples


def test_random_nontarget_count_is_rate_of_nontarget():
    idx = select_poison(LABELS, 0, "random_nontarget", 0.1, data_seed=0)
    assert len(idx) == 90 and (LABELS[idx] != 0).all() and len(set(idx)) == 90


def test_random_all_draws_from_every_class():
    idx = select_poison(LABELS, 0, "random_all", 0.25, data_seed=0)
    assert len(idx) == 250 and (LABELS[idx] == 0).any()


def test_target_fraction_stays_in_target_class():
    idx = select_poison(LABELS, 5, "target_fraction", 0.5, data_seed=0)
    assert len(idx) == 50 and (LABELS[idx] == 5).all()


def test_selection_depends_on_data_seed_only():
    torch.manual_seed(1)
    np.random.seed(1)
    a = select_poison(LABELS, 0, "random_nontarget", 0.1, data_seed=7)
    torch.manual_seed(2)
    np.random.seed(2)
    b = select_poison(LABELS, 0, "random_nontarget", 0.1, data_seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, select_poison(LABELS, 0, "random_nontarget", 0.1, data_seed=8))


def test_all2one_poisoning(smoke_train):
    attack = get_attack("badnets_dbd_2x2", rate=0.1)
    p = attack.poison(smoke_train, data_seed=0)
    assert p.count == len(attack.poison_indices(smoke_train, 0)) == int(p.poison_mask.sum())
    assert (p.labels[p.poison_mask] == 3).all() and (p.true_labels[p.poison_mask] != 3).all()
    assert torch.equal(p.true_labels, smoke_train.labels)
    clean = ~p.poison_mask
    assert torch.equal(p.images[clean], smoke_train.images[clean]) and torch.equal(p.labels[clean], smoke_train.labels[clean])
    assert (p.images[p.poison_mask][:, :, 4, 4] == torch.tensor([180, 249, 112], dtype=torch.uint8)).all()
    assert not p.cross_mask.any()


def test_all2all_labels_and_test_population(smoke_train, smoke_test):
    attack = get_attack("white3_fct")
    p = attack.poison(smoke_train, data_seed=0)
    assert p.count == 500
    assert torch.equal(p.labels[p.poison_mask], (smoke_train.labels[p.poison_mask] + 1) % 10)
    images, attack_labels, true = attack.test_population(smoke_test)
    assert len(images) == len(smoke_test)  # every test image
    assert torch.equal(attack_labels, (true + 1) % 10)


def test_clean_label_keeps_labels(smoke_train):
    attack = get_attack("sig_fct")
    p = attack.poison(smoke_train, data_seed=0)
    assert p.count == 50  # int(0.1 * 500 target-class images)
    assert torch.equal(p.labels, smoke_train.labels) and (p.true_labels[p.poison_mask] == 0).all()


def test_asr_population_excludes_target_class_and_uses_test_trigger(smoke_test):
    attack = get_attack("sig_fct")
    images, attack_labels, true = attack.test_population(smoke_test)
    assert len(images) == 900 and (true != 0).all() and (attack_labels == 0).all()
    keep = smoke_test.labels != 0
    assert torch.equal(images, attack.trigger.apply(smoke_test.images[keep], train=False))


def test_wanet_cross_samples_keep_true_labels(smoke_train):
    p = get_attack("wanet", rate=0.1).poison(smoke_train, data_seed=0)
    assert int(p.cross_mask.sum()) == 2 * p.count
    assert not (p.cross_mask & p.poison_mask).any()
    assert torch.equal(p.labels[p.cross_mask], smoke_train.labels[p.cross_mask])
    assert not torch.equal(p.images[p.cross_mask], smoke_train.images[p.cross_mask])


def test_label_consistent_requires_an_adversary(smoke_train):
    attack = get_attack("lc_dbd")
    with pytest.raises(ValueError, match="adversary"):
        attack.poison(smoke_train, data_seed=0)
    marker = lambda imgs, labels: torch.zeros_like(imgs)  # noqa: E731
    p = attack.poison(smoke_train, data_seed=0, adversary=marker)
    assert p.count == 125 and (p.images[p.poison_mask][:, :, :29, :29] == 0).all()
    assert (p.images[p.poison_mask][:, 0, 29:32, 31] == torch.tensor([255, 0, 255], dtype=torch.uint8)).all()


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_rate_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match="rate"):
        get_attack("grid3", rate=bad)


def test_unknown_attack_and_parameter_are_rejected():
    with pytest.raises(ValueError, match="unknown attack"):
        get_attack("badnet")
    with pytest.raises(ValueError, match="no parameter"):
        get_attack("grid3", alpha=0.2)
    with pytest.raises(ValueError, match="clean_label"):
        get_attack("grid3", label_mode="clean_label")


@pytest.mark.parametrize("key", [k for k in keys_for_size(32)  # the other sizes: test_triggers_sizes.py
                                 if not get_attack(k).training_controlled  # in-loop: test_inloop_wanet.py
                                 and not get_attack(k).trigger_from_clean_model])  # test_trojannn_stage.py
def test_every_registered_attack_poisons_the_smoke_set(key, smoke_train):
    fake_pgd = lambda imgs, labels: imgs  # noqa: E731
    attack = get_attack(key)
    p = attack.poison(smoke_train, data_seed=0, adversary=fake_pgd)
    assert p.images.dtype == torch.uint8 and p.count > 0
    assert not torch.equal(p.images[p.poison_mask], smoke_train.images[p.poison_mask])
    assert torch.equal(p.images[~p.poison_mask & ~p.cross_mask], smoke_train.images[~p.poison_mask & ~p.cross_mask])
    assert attack.rate_of and ATTACKS[key].papers and attack.source
