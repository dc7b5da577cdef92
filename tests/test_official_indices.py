"""Poison counts per attack key, and the official repositories' poisoned indices, index for index.

The reference lists are computed here from each official code's formula (the random calls it makes, in
order, after the seed it sets), on a label sequence shaped like CIFAR-10's (50,000 samples, 5,000 per
class, interleaved); on torchvision's real CIFAR-10 labels the same calls give the official lists."""
import random

import numpy as np
import pytest
import torch

from backdoor_repro.attacks import ATTACKS, get_attack, select_poison
from backdoor_repro.data import ImageSet

N = 50_000
LABELS = np.random.default_rng(123).permutation(np.arange(N) % 10)  # 5,000 per class, interleaved


def labelled(labels, order="torchvision"):
    images = torch.zeros(len(labels), 3, 32, 32, dtype=torch.uint8)
    return ImageSet(images, torch.as_tensor(labels), tuple(map(str, range(10))), "cifar10", order)


def dbd_reference(labels, target=3, ratio=0.05, seed=100):
    """SCLBD/DBD gen_poison_idx after random.seed(100): one random.random() per sample, target class included."""
    state = random.getstate()
    random.seed(seed)
    flags = [1 if (random.random() < ratio and t != target) else 0 for t in labels.tolist()]
    random.setstate(state)
    return np.flatnonzero(flags)


def fct_reference(labels, candidates, ratio=0.1, seed=1000):
    """FCT addTrigger after np.random.seed(1000): a permutation of the candidates' positions, first int(ratio n)."""
    state = np.random.get_state()
    np.random.seed(seed)
    perm = np.random.permutation(len(candidates))[0:int(len(candidates) * ratio)]
    np.random.set_state(state)
    return np.sort(candidates[perm])


def backdoorbench_reference(labels, pool, ratio=0.1, seed=0):
    """BackdoorBench after fix_random(0): np.random.choice(pool, round(ratio N), replace=False)."""
    state = np.random.get_state()
    np.random.seed(seed)
    chosen = np.random.choice(pool, round(ratio * len(labels)), replace=False)
    np.random.set_state(state)
    return np.sort(chosen)


@pytest.mark.parametrize("key, reference", [
    ("badnets_dbd_2x2", lambda: dbd_reference(LABELS)),
    ("blend_kitty_dbd", lambda: dbd_reference(LABELS)),
    ("grid3", lambda: fct_reference(LABELS, np.flatnonzero(LABELS != 0))),
    ("trojan3_fct", lambda: fct_reference(LABELS, np.flatnonzero(LABELS != 0))),
    ("blend_strip_fct", lambda: fct_reference(LABELS, np.flatnonzero(LABELS != 0))),
    ("blend_kitty_fct", lambda: fct_reference(LABELS, np.flatnonzero(LABELS != 0))),
    ("white3_fct", lambda: fct_reference(LABELS, np.arange(N))),
    ("sig_fct", lambda: fct_reference(LABELS, np.flatnonzero(LABELS == 0))),
    ("cl_fct", lambda: fct_reference(LABELS, np.flatnonzero(LABELS == 0))),
    ("white3_bb", lambda: backdoorbench_reference(LABELS, np.arange(N))),
    ("blend_kitty_bb", lambda: backdoorbench_reference(LABELS, np.arange(N))),
    ("sig_bb", lambda: backdoorbench_reference(LABELS, np.flatnonzero(LABELS == 0), ratio=0.05)),
])
def test_official_indices_match_the_official_formula(key, reference):
    rate = {"sig_bb": {"rate": 0.05}}.get(key, {})  # at its default 0.1 sig_bb takes every target image
    got = get_attack(key, indices="official", **rate).poison_indices(labelled(LABELS), data_seed=0)
    assert np.array_equal(got, reference())
    ours = get_attack(key, **rate).poison_indices(labelled(LABELS), data_seed=0)
    assert not np.array_equal(got, ours)  # our own stream is a different draw of the same rule


def test_data_seed_offsets_the_official_seed():
    assert np.array_equal(select_poison(LABELS, 0, "random_nontarget", 0.1, 1, "fct"),
                          fct_reference(LABELS, np.flatnonzero(LABELS != 0), seed=1001))
    assert np.array_equal(select_poison(LABELS, 3, "bernoulli_nontarget", 0.05, 2, "dbd"), dbd_reference(LABELS, seed=102))


def test_official_streams_ignore_the_global_rngs():
    np.random.seed(7)
    random.seed(7)
    a = select_poison(LABELS, 0, "random_nontarget", 0.1, 0, "fct")
    b = select_poison(LABELS, 3, "bernoulli_nontarget", 0.05, 0, "dbd")
    np.random.seed(8)
    random.seed(8)
    assert np.array_equal(a, select_poison(LABELS, 0, "random_nontarget", 0.1, 0, "fct"))
    assert np.array_equal(b, select_poison(LABELS, 3, "bernoulli_nontarget", 0.05, 0, "dbd"))


def test_official_indices_fall_back_with_a_warning_off_the_official_order():
    attack = get_attack("grid3", indices="official")
    with pytest.warns(UserWarning, match="torchvision's order"):
        p = attack.poison(labelled(LABELS, order="folder"), data_seed=0)
    assert p.index_stream == "ours"
    assert np.array_equal(torch.nonzero(p.poison_mask).flatten().numpy(),
                          get_attack("grid3").poison_indices(labelled(LABELS), data_seed=0))
    with pytest.warns(UserWarning, match="no official index stream"):
        get_attack("lc_dbd", indices="official").poison_indices(labelled(LABELS), data_seed=0)
    assert get_attack("grid3", indices="official").poison(labelled(LABELS[:1000]), 0).index_stream == "fct"
    gtsrb = labelled(LABELS[:1000])
    gtsrb.name = "gtsrb"
    with pytest.warns(UserWarning, match="CIFAR-10/100"):  # the official streams are CIFAR-only
        assert get_attack("grid3", indices="official").poison(gtsrb, 0).index_stream == "ours"
    with pytest.raises(ValueError, match="indices"):
        get_attack("grid3", indices="theirs")


# On CIFAR-10 (50,000 training images, 5,000 per class), the count each paper's code poisons (attacks.md §2),
# per registry key; Bernoulli counts as (low, high). A new attack key needs its row here.
COUNTS = {
    "badnets_dbd_2x2": (2100, 2400), "blend_kitty_dbd": (2100, 2400), "blend_noise": (2100, 2400),
    "wanet": (2100, 2400), "grid3": 4500, "white4_tr": 5000, "white3_fct": 5000, "white3_bb": 5000,
    "blend_kitty_fct": 4500, "blend_kitty_bb": 5000, "blend_strip_fct": 4500, "trojan3_fct": 4500,
    "trojan3_tr": 5000, "sig_fct": 500, "sig_bb": 5000, "sig_tr_wrapped": 5000, "lc_dbd": 1250,
    "grid3_tr": 5000, "trojan8_tr": 5000, "trojan_wm_tr": 5000, "l0_inv": 5000, "l2_inv": 5000, "smooth_tr": 5000,
    "blend_kitty_tr": 5000, "cl_tr": 5000, "cl_fct": 500,
    "grid_bb": 5000, "lf_bb": 5000, "wanet_bb": 5000, "lc_bb": 5000, "trojannn_bb": 5000,
    "grid_tr_imagenet": 5000, "blend_kitty_tr_imagenet": 5000, "trojan_wm_tr_imagenet": 5000, "sig_tr_imagenet": 5000,
    "white22_fct_imagenet": 4500, "blend_strip_fct_imagenet": 4500,
}


@pytest.mark.parametrize("key", sorted(ATTACKS))
def test_poison_count_per_key(key):
    if get_attack(key).training_controlled:
        pytest.skip(f"{key} poisons inside its training loop: no fixed indices (tests/test_inloop_wanet.py)")
    assert key in COUNTS, f"add {key}'s CIFAR-10 poison count to COUNTS"
    count = len(get_attack(key).poison_indices(labelled(LABELS), data_seed=0))
    expected = COUNTS[key]
    if isinstance(expected, tuple):
        assert expected[0] <= count <= expected[1]
    else:
        assert count == expected


def test_rate_counts_the_whole_training_set_where_the_code_does():
    """T&R poisons int(0.1 x 50,000) = 5,000 of its 47,500-image split; clean-label takes the whole target class
    of the split (capped at 5,000); BackdoorBench's clean-label count is round(rate x N), an error past the class."""
    split = labelled(LABELS[:47_500])
    assert len(get_attack("white4_tr").poison_indices(split, 0, reference_size=N)) == 5000
    assert len(get_attack("white4_tr").poison_indices(split, 0)) == 4750  # without the reference: of the split
    sig = get_attack("sig_tr_wrapped").poison_indices(split, 0, reference_size=N)
    assert np.array_equal(sig, np.flatnonzero(LABELS[:47_500] == 0))
    with pytest.raises(ValueError, match="the class has"):
        get_attack("sig_bb", rate=0.2).poison_indices(labelled(LABELS), 0)
    with pytest.raises(ValueError, match="reference_size"):
        get_attack("white4_tr").poison_indices(split, 0, reference_size=100)


def test_a_fixed_rule_is_recorded_as_such_not_as_our_stream():
    """T&R's first-N rule draws nothing: the run record names the rule instead of claiming a random stream."""
    p = get_attack("grid3_tr", indices="official").poison(labelled(LABELS[:1000]), 0)
    assert p.index_stream == "first_n_nontarget (fixed rule on the data's order)"
