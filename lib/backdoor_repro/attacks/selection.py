"""Which training samples an attack poisons (``attacks.md`` §2). Every rule draws from a numpy
``Generator(data_seed)`` only, so poison selection never depends on the training RNG."""
from __future__ import annotations

import numpy as np

SELECTIONS = {
    "bernoulli_nontarget": "each non-target sample independently with probability rate (DBD)",
    "first_n_nontarget": "the first int(rate * N) non-target samples in index order (T&R)",
    "random_nontarget": "int(rate * #non-target) non-target samples drawn at random (FCT)",
    "random_all": "round(rate * N) samples drawn from all classes, target class included (BackdoorBench/FMP)",
    "target_fraction": "int(rate * #target-class) target-class samples drawn at random (clean-label)",
}


def select_poison(labels: np.ndarray, target: int, selection: str, rate: float, data_seed: int) -> np.ndarray:
    """Sorted indices of the samples to poison."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; choose from {', '.join(SELECTIONS)}")
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(data_seed)
    nontarget = np.flatnonzero(labels != target)
    if selection == "bernoulli_nontarget":
        chosen = np.flatnonzero((rng.random(n) < rate) & (labels != target))
    elif selection == "first_n_nontarget":
        chosen = nontarget[: int(rate * n)]
    elif selection == "random_nontarget":
        chosen = rng.permutation(nontarget)[: int(rate * len(nontarget))]
    elif selection == "random_all":
        chosen = rng.choice(n, size=int(round(rate * n)), replace=False)
    else:
        target_idx = np.flatnonzero(labels == target)
        chosen = rng.permutation(target_idx)[: int(rate * len(target_idx))]
    return np.sort(chosen).astype(np.int64)
