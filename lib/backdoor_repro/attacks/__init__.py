"""Poisoning attacks: ``get_attack(key).poison(train_set, data_seed)`` and ``attack.test_population(test_set)``."""
from .base import Attack, PoisonedSet, Trigger
from .label_consistent import pgd_adversary
from .registry import ATTACKS, POISONING_VERSION, canonical_overrides, get_attack, register
from . import catalog, catalog_imagenet, catalog_inloop  # noqa: E402,F401  (registration)
from .selection import SELECTIONS, select_poison
from .sizes import SizedTrigger, check_attack_size, keys_for_size

__all__ = ["ATTACKS", "POISONING_VERSION", "Attack", "PoisonedSet", "SELECTIONS", "SizedTrigger", "Trigger",
           "canonical_overrides", "check_attack_size", "get_attack", "keys_for_size", "pgd_adversary", "register",
           "select_poison"]
