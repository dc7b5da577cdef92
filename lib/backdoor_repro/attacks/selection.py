"""Which training samples an attack poisons (``attacks.md`` §2).

A *selection rule* fixes who is eligible and how many (what ``rate`` is a fraction of); an *index
stream* fixes which ones are drawn:

* ``"ours"`` — numpy ``default_rng(data_seed)``, the same for every rule;
* an official stream (``"dbd"``, ``"fct"``, ``"backdoorbench"``) — the random calls of that paper's code,
  seeded as it seeds them plus ``data_seed``, so that on CIFAR-10 in torchvision's order ``data_seed=0``
  gives the official repository's poisoned indices, index for index.

Every stream draws from its own generator, never from a global RNG, so poison selection does not
depend on the training RNG. The fixed rules (T&R's "first N") take the data's order, which is a fair sample only
where the classes are interleaved (CIFAR in torchvision's order); on class-ordered labels (an image-folder tree, the
bundled subset, GTSRB, any set whose classes lie in one block each) the first N non-target samples would be one or
two classes, so the order is shuffled first, seeded by ``data_seed`` as T&R's holdout rule shuffles
(``holdout.split_holdout``), with a warning. ``reference_size`` is the size of the set a "fraction of the whole training
set" refers to when the data passed in is a part of it (T&R poisons its 47,500-image split with
``int(0.1 × 50,000)`` samples).
"""
from __future__ import annotations

import random
import warnings

import numpy as np

SELECTIONS = {
    "bernoulli_nontarget": "each non-target sample independently with probability rate (DBD)",
    "first_n_nontarget": "the first int(rate x N_total) non-target samples in index order (T&R)",
    "first_n_target": "the first min(#target-class, int(rate x N_total)) target-class samples in index order "
                      "(T&R clean-label)",
    "random_nontarget": "int(rate x #non-target) non-target samples drawn at random (FCT all2one)",
    "random_all_floor": "int(rate x N) samples drawn from all classes (FCT all2all)",
    "target_fraction": "int(rate x #target-class) target-class samples drawn at random (FCT clean-label)",
    "random_all": "round(rate x N_total) samples drawn from all classes, target class included (BackdoorBench)",
    "random_target_of_all": "round(rate x N_total) target-class samples drawn at random; an error if the class "
                            "has fewer (BackdoorBench clean-label)",
}

# what ``rate`` is a fraction of, per rule (N_total = reference_size, the whole training set)
RATE_OF = {
    "bernoulli_nontarget": "probability per non-target sample",
    "first_n_nontarget": "whole training set (before any holdout split)",
    "first_n_target": "whole training set (before any holdout split), capped at the target class",
    "random_nontarget": "non-target samples",
    "random_all_floor": "whole training set",
    "target_fraction": "target class",
    "random_all": "whole training set (before any holdout split)",
    "random_target_of_all": "whole training set (before any holdout split); on a split capped at its target class",
}

CLEAN_LABEL_SELECTIONS = ("first_n_target", "target_fraction", "random_target_of_all")
DETERMINISTIC = ("first_n_nontarget", "first_n_target")

# official stream -> (seed its code sets, the rules its code has)
OFFICIAL_STREAMS = {
    "dbd": (100, ("bernoulli_nontarget",)),  # SCLBD/DBD data/utils.py gen_poison_idx, Python random
    "fct": (1000, ("random_nontarget", "random_all_floor", "target_fraction")),  # FCT utils/dataloader_bd.py
    "backdoorbench": (0, ("random_all", "random_target_of_all")),  # BackdoorBench poison index, np.random.choice
}
STREAMS = ("ours",) + tuple(OFFICIAL_STREAMS)


def poison_count(labels: np.ndarray, target: int, selection: str, rate: float, reference_size: int | None = None) -> int | None:
    """How many samples ``selection`` poisons (``None`` for the Bernoulli rule, whose count is random)."""
    n_ref = len(labels) if reference_size is None else reference_size
    n_target = int((labels == target).sum())
    n_nontarget = len(labels) - n_target
    counts = {
        "first_n_nontarget": min(n_nontarget, int(rate * n_ref)),
        "first_n_target": min(n_target, int(rate * n_ref)),
        "random_nontarget": int(rate * n_nontarget),
        "random_all_floor": int(rate * len(labels)),
        "target_fraction": int(rate * n_target),
        "random_all": int(round(rate * n_ref)),
        "random_target_of_all": int(round(rate * n_ref)),
    }
    return counts.get(selection)


def class_ordered(labels: np.ndarray) -> bool:
    """Whether every class present lies in one contiguous block (at least two classes): a set stored class by class,
    where "the first N" of an index order is not a sample of the classes."""
    labels = np.asarray(labels)
    if len(labels) < 2:
        return False
    runs = 1 + int(np.count_nonzero(labels[1:] != labels[:-1]))
    return runs == len(np.unique(labels)) > 1


def fixed_rule_order(labels: np.ndarray, pool: np.ndarray, selection: str, data_seed: int) -> np.ndarray:
    """``pool`` in the order a fixed rule takes it: index order, or on :func:`class_ordered` labels the order of a
    permutation seeded by ``data_seed`` (as ``holdout.split_holdout`` shuffles), with a warning."""
    if not class_ordered(labels):
        return pool
    what = "only the first classes" if selection == "first_n_nontarget" else "the target class's first files"
    warnings.warn(f"{selection} on class-ordered data (each class in one block) would poison {what}: the order is "
                  "shuffled first, seeded by data_seed (as T&R's holdout split shuffles)", stacklevel=4)
    order = np.random.default_rng([data_seed, 11]).permutation(len(labels))
    return order[np.isin(order, pool)]


def select_poison(labels, target: int, selection: str, rate: float, data_seed: int, stream: str = "ours",
                  reference_size: int | None = None) -> np.ndarray:
    """Sorted indices of the samples to poison."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; choose from {', '.join(SELECTIONS)}")
    if stream not in STREAMS:
        raise ValueError(f"unknown index stream {stream!r}; choose from {', '.join(STREAMS)}")
    if stream != "ours" and selection not in DETERMINISTIC and selection not in OFFICIAL_STREAMS[stream][1]:
        raise ValueError(f"the {stream} code has no selection {selection!r}")
    labels = np.asarray(labels)
    n = len(labels)
    if reference_size is not None and reference_size < n:
        raise ValueError(f"reference_size {reference_size} is smaller than the {n} samples passed in")
    nontarget, target_idx = np.flatnonzero(labels != target), np.flatnonzero(labels == target)
    count = poison_count(labels, target, selection, rate, reference_size)
    if selection == "random_target_of_all" and count > len(target_idx):
        if reference_size is None or reference_size == n:  # BackdoorBench's own error: more than the class holds
            raise ValueError(f"rate {rate} asks for {count} target-class samples; the class has {len(target_idx)}")
        count = len(target_idx)  # a split (e.g. T&R's protocol) holds fewer target images than the whole set
    pool = {"bernoulli_nontarget": None, "first_n_nontarget": nontarget, "first_n_target": target_idx,
            "random_nontarget": nontarget, "random_all_floor": np.arange(n), "target_fraction": target_idx,
            "random_all": np.arange(n), "random_target_of_all": target_idx}[selection]

    if selection in DETERMINISTIC:
        chosen = fixed_rule_order(labels, pool, selection, data_seed)[:count]
    elif stream == "ours":
        rng = np.random.default_rng(data_seed)
        if selection == "bernoulli_nontarget":
            chosen = np.flatnonzero((rng.random(n) < rate) & (labels != target))
        else:
            chosen = rng.permutation(pool)[:count]
    else:
        seed = OFFICIAL_STREAMS[stream][0] + data_seed
        if stream == "dbd":  # one random.random() per sample, target class included, in index order
            draws = random.Random(seed)
            chosen = np.flatnonzero([(draws.random() < rate) and t != target for t in labels.tolist()])
        elif stream == "fct":  # np.random.seed(1000) at import; a permutation of the candidates' positions
            chosen = pool[np.random.RandomState(seed).permutation(len(pool))[:count]]
        else:  # backdoorbench: fix_random(0), then np.random.choice without replacement
            chosen = np.random.RandomState(seed).choice(pool, count, replace=False)
    return np.sort(chosen).astype(np.int64)
