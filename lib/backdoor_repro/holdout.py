"""Clean holdouts carved from the training set by one seeded rule (:data:`backdoor_repro.spec.HOLDOUT_RULES`)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .attacks import PoisonedSet
from .data import ImageSet
from .spec import Holdout


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
    source's order. On data not in torchvision's order (the bundled subset, an image-folder tree are class by
    class, so "the last 5 %" would be one class) it falls back to ``balanced`` with a warning.
    ``balanced``: ``round(fraction · n_c)`` random samples of every class ``c``, seeded by ``data_seed``.
    """
    if not holdout.disjoint:
        raise ValueError(f"holdout rule {holdout.rule!r} does not split the training set")
    n = len(train)
    if holdout.rule == "last" and train.order == "torchvision":
        cut = n - int(n * holdout.fraction)
        return train.head(cut), train.subset(torch.arange(cut, n))
    if holdout.rule == "last":
        warnings.warn(f"holdout rule 'last' needs the training set in torchvision's order; {train.name} is in "
                      f"{train.order!r} order, so a class-balanced random {holdout.fraction:.0%} is held out instead",
                      stacklevel=2)
    labels = train.labels.cpu().numpy()
    counts = {c: int(round(holdout.fraction * int((labels == c).sum()))) for c in range(train.num_classes)}
    held = balanced_draw(labels, counts, [data_seed, 11])
    keep = np.setdiff1d(np.arange(n), held)
    return train.subset(torch.as_tensor(keep)), train.subset(torch.as_tensor(held))


def clean_subset(poisoned: PoisonedSet, holdout: Holdout, data_seed: int) -> ImageSet:
    """FMP's "secure" subset: ``round(fraction · N / K)`` samples of every class drawn at random (seeded by
    ``data_seed``) among those the attacker did not touch, with their true labels."""
    labels = poisoned.true_labels.cpu().numpy()
    untouched = ~(poisoned.poison_mask | poisoned.cross_mask).cpu().numpy()
    k = len(poisoned.classes)
    per_class = int(round(holdout.fraction * len(labels) / k))
    idx = torch.as_tensor(balanced_draw(labels, {c: per_class for c in range(k)}, [data_seed, 12], untouched),
                          device=poisoned.labels.device)
    return ImageSet(poisoned.images[idx], poisoned.true_labels[idx], poisoned.classes, f"{poisoned.attack}-clean-subset")
