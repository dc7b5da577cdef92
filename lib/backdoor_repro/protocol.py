"""The two protocols a grid cell can run under (:func:`backdoor_repro.resolve.resolve` applies them).

``own``: the defense's paper's protocol, exactly what its notebook runs (its model, No-Defense schedule, holdout
rule and attack settings), so a cell reuses that notebook's cached artifacts.

``common``: one protocol for every cell, so that defenses can be compared at all:

* one architecture: the profile's ResNet-18 (DBD's; width 8 on smoke, 64 otherwise) normalised with the dataset's statistics (DBD's
  on CIFAR-10; ``datasets.py``) and
  the profile's No-Defense schedule, for every defense but Trap-and-Replace (see :data:`OWN_ARCHITECTURE`);
* one poisoning rate for the dirty-label attacks (10 % of the training set) and one target (class 0) for every
  attack with one target class; clean-label attacks keep their own rate, a fraction of the target class;
* one clean holdout for the defenses that get one (T&R, FMP, FT, FP, ANP): a seeded, class-balanced draw of
  clean originals from the same training set (:data:`COMMON_HOLDOUT`); it does not change what the attacker
  trained on, so every defense of an attack starts from the same poisoned set and the same No-Defense model;
* each defense's own config (its paper's settings otherwise); ASR on non-target test images, last-epoch numbers,
  ACC on the whole test set and on its non-target images.
"""
from __future__ import annotations

from .attacks import get_attack
from .spec import Holdout

PROTOCOLS = ("common", "own")
COMMON_RATE = 0.1
COMMON_TARGET = 0
# fast / paper: T&R's 5 % on CIFAR (FMP's paper grants 10 %); smoke: 10 % of 5,000 images (50 per class)
COMMON_HOLDOUT = {"smoke": Holdout(0.1, "clean_subset"), "cpu": Holdout(0.05, "clean_subset"),
                  "fast": Holdout(0.05, "clean_subset"),
                  "paper": Holdout(0.05, "clean_subset")}
# defenses whose method is implemented for their paper's network only: they keep it (and its No-Defense schedule)
OWN_ARCHITECTURE = {"trap_and_replace": "the trap (a reconstruction decoder on the stem, a small head) is built "
                                        "for T&R's WRN-16-1 only; its cells use that network and its No-Defense "
                                        "schedule, and their DER is against that No-Defense model"}


def describe_common(profile) -> list[str]:
    """The common protocol as lines for the top of the grid notebook."""
    holdout = COMMON_HOLDOUT[profile.name]
    return [
        f"architecture: {profile.model} at width {profile.width}, CIFAR normalisation, the {profile.name} "
        f"No-Defense schedule ({profile.no_defense_schedule.epochs} epochs)",
        f"dataset: {profile.dataset}; poisoning: {COMMON_RATE:.0%} of the training set for dirty-label attacks "
        f"(clean-label ones keep their rate, a fraction of the target class); target class {COMMON_TARGET} for "
        "every attack with one target (all-to-all attacks keep theirs)",
        f"clean holdout (defenses that get one): {holdout.fraction:.0%} of the training set, a seeded "
        "class-balanced draw of clean originals (it stays in the attacker's training set)",
        "each defense with its own paper's config for this profile; ASR on non-target test images; last-epoch "
        "models; ACC on the whole test set and without the target class",
        *(f"exception, {key}: {why}" for key, why in OWN_ARCHITECTURE.items()),
    ]


def common_overrides(attack: str) -> dict:
    """The common rate and target, where the attack takes them."""
    a = get_attack(attack)
    out = {}
    if a.label_mode != "all2all":  # all-to-one and clean-label attacks have one target class
        out["target"] = COMMON_TARGET
    if a.label_mode != "clean_label":
        out["rate"] = COMMON_RATE
    return out
