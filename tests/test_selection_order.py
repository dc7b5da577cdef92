"""T&R's fixed "first N" rules on class-ordered data (an image-folder tree, the bundled subset, GTSRB): the order is
shuffled first, seeded by data_seed, wherever the rule is reached (the library call, the grid's common protocol with a
T&R attack); on interleaved data (CIFAR in torchvision's order) the rule keeps the index order, the official one."""
import numpy as np
import pytest
import torch

from backdoor_repro.attacks import get_attack, select_poison
from backdoor_repro.attacks.selection import class_ordered
from backdoor_repro.data import ImageSet, class_balanced_subset

BLOCKS = np.repeat(np.arange(10), 50)  # 500 samples, class by class


def test_class_order_is_told_from_the_labels():
    assert class_ordered(BLOCKS) and class_ordered(np.repeat([3, 1, 2], 4))
    assert not class_ordered(np.arange(500) % 10) and not class_ordered(np.random.default_rng(0).permutation(BLOCKS))
    assert not class_ordered(np.zeros(10)) and not class_ordered(np.array([0, 1, 0]))


@pytest.mark.parametrize("selection, target, classes", [("first_n_nontarget", 0, set(range(1, 10))),
                                                         ("first_n_target", 4, {4})])
def test_first_n_on_class_ordered_labels_draws_from_a_seeded_shuffle(selection, target, classes):
    with pytest.warns(UserWarning, match="class-ordered"):
        idx = select_poison(BLOCKS, target, selection, 0.1, data_seed=0)
    assert len(idx) == 50 and set(BLOCKS[idx]) == classes
    with pytest.warns(UserWarning):
        assert np.array_equal(idx, select_poison(BLOCKS, target, selection, 0.1, data_seed=0))  # seeded
        other = select_poison(BLOCKS, target, selection, 0.1, data_seed=1)
    assert selection == "first_n_target" or not np.array_equal(idx, other)


def test_first_n_on_interleaved_labels_keeps_the_index_order():
    labels = np.arange(500) % 10
    idx = select_poison(labels, 0, "first_n_nontarget", 0.1, data_seed=5)
    assert np.array_equal(idx, np.flatnonzero(labels != 0)[:50])


def test_a_tr_attack_on_a_class_ordered_set_poisons_every_non_target_class(smoke_train):
    train = class_balanced_subset(smoke_train, 20)  # the bundled subset's order: class by class
    with pytest.warns(UserWarning, match="class-ordered"):
        poisoned = get_attack("grid3_tr").poison(train, data_seed=0)
    assert poisoned.count == 20 and set(poisoned.true_labels[poisoned.poison_mask].tolist()) == set(range(1, 10))


def test_the_grid_common_protocol_with_a_tr_attack_on_class_ordered_data_poisons_every_non_target_class(tmp_path):
    """The common protocol's holdout does not split the training set, so T&R's rule meets the data's own order."""
    from backdoor_repro.cache import ArtifactCache
    from backdoor_repro.experiment import setup
    from backdoor_repro.pipeline import run_data
    ex = setup("smoke", device="cpu", quiet=True)  # the bundled subset, class by class
    spec = ex.spec("grid3_tr", "trap_and_replace", protocol="common")
    assert not spec.holdout.disjoint
    with pytest.warns(UserWarning, match="class-ordered"):
        data = run_data(spec, ex.train, None, ArtifactCache(tmp_path))
    target = spec.make_attack().target
    poisoned_classes = set(data.train.true_labels[data.train.poison_mask].tolist())
    assert poisoned_classes == set(range(10)) - {target}
    assert data.train.count == int(0.1 * len(ex.train))


def test_an_interleaved_torchvision_order_is_untouched(tmp_path):
    n = 400
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    train = ImageSet(images, torch.arange(n) % 10, tuple(map(str, range(10))), "cifar10", "torchvision")
    p = get_attack("grid3_tr", indices="official").poison(train, 0)
    assert torch.equal(torch.nonzero(p.poison_mask).flatten(), torch.nonzero(train.labels != 0).flatten()[:40])
