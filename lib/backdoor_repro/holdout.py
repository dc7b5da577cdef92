"""Clean holdouts carved from the training set by one seeded rule (:data:`backdoor_repro.spec.HOLDOUT_RULES`)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .data import ImageSet
from .spec import Holdout

# sets whose torchvision order interleaves the classes, so "the last 5 %" is a fair sample (GTSRB's is by class)
INDEX_ORDERED_DATASETS = ("cifar10", "cifar100")


def balanced_draw(labels: np.ndarray, per_class: dict[int, int], seed, eligible: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices: ``per_class[c]`` samples of each class ``c`` drawn at random (numpy ``default_rng(seed)``)
    from the ``eligible`` ones; an error naming the class if it has too few."""
    rng = np.random.default_rng(seed)
    eligible = np.ones(len(labels), dtype=bool) if eligible is None else eligible
    picks = []
    for c, k in sorted(per_class.items()):
        pool = np.flatnonzero((labels == c) & eligible)
        if len(pool) < k:
            raise ValueError(f"class {c} has only {len(pool)} eligible samples, {k} needed for the holdout")
        picks.append(rng.permutation(pool)[:k])
    return np.sort(np.concatenate(picks)).astype(np.int64) if picks else np.zeros(0, dtype=np.int64)


def split_holdout(train: ImageSet, holdout: Holdout, data_seed: int) -> tuple[ImageSet, ImageSet]:
    """``(defender's training split, clean holdout)`` for the rules that split before poisoning.

    ``last``: the last ``int(N · fraction)`` indices (T&R: 47,500–49,999 of CIFAR-10); the split keeps the
    source's order. ``shuffled``: a permutation seeded by ``data_seed`` first, then the same cut; the split keeps
    the permuted order, so T&R's "first N non-target" poisons a random N (T&R's GTSRB loader shuffles the same
    way, unseeded and differently for each split). ``last`` on anything but CIFAR in torchvision's order (the
    bundled subset, image-folder trees and torchvision's GTSRB are class by class: the last 5 % would be one or
    two classes) falls back to ``shuffled`` with a warning.
    """
    if not holdout.disjoint:
        raise ValueError(f"holdout rule {holdout.rule!r} does not split the training set")
    n = len(train)
    cut = n - int(n * holdout.fraction)
    index_ordered = train.order == "torchvision" and train.name in INDEX_ORDERED_DATASETS
    if holdout.rule == "last" and index_ordered:
        return train.head(cut), train.subset(torch.arange(cut, n))
    if holdout.rule == "last":
        warnings.warn(f"holdout rule 'last' needs CIFAR in torchvision's order (its classes interleaved); {train.name} "
                      f"is in {train.order!r} order, so it is shuffled (seeded by data_seed) before the split",
                      stacklevel=2)
    order = torch.as_tensor(np.random.default_rng([data_seed, 11]).permutation(n))
    return train.subset(order[:cut]), train.subset(order[cut:])


def clean_subset(train: ImageSet, holdout: Holdout, data_seed: int) -> ImageSet:
    """FMP's "secure" subset: ``round(fraction · N / K)`` samples of every class drawn at random (seeded by
    ``data_seed``) from the clean training set, with their true labels. As in FMP's code (which draws from
    BackdoorBench's ``clean_train``), a sample the attacker poisoned can be drawn: the defender gets its clean
    original, never the poisoned copy. At least one per class: on a set so small that the fraction rounds to none (a
    dry run's 10 images per class), an empty holdout would leave every defense that reads it nothing to train on."""
    labels = train.labels.cpu().numpy()
    k = train.num_classes
    per_class = max(1, int(round(holdout.fraction * len(labels) / k)))
    idx = torch.as_tensor(balanced_draw(labels, {c: per_class for c in range(k)}, [data_seed, 12]),
                          device=train.labels.device)
    return ImageSet(train.images[idx], train.labels[idx], train.classes, f"{train.name}-clean-subset")
