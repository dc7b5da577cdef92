"""The registry of attacks: :func:`register`, :func:`get_attack`, :func:`canonical_overrides`. Each key is one paper's
variant with that paper's code defaults (the keys are in :mod:`.catalog` and :mod:`.catalog_imagenet`); any default
can be overridden: ``get_attack("grid3", target=0, selection="first_n_nontarget")``.

Add your own with :func:`register` (a factory taking ``data_seed`` and keyword overrides). This module imports no
trigger, so every other module of the package may import it."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class AttackEntry:
    factory: Callable[..., Any]  # returns a base.Attack
    family: str
    papers: str
    description: str


ATTACKS: dict[str, AttackEntry] = {}

# Part of every poisoned set's artifact key: bump it when a trigger's pixels or a selection rule change, so no
# artifact built from the old poisoned sets is reused.
POISONING_VERSION = 1


def register(key: str, family: str, papers: str, description: str):
    def wrap(factory):
        if key in ATTACKS:
            raise ValueError(f"attack {key!r} is already registered")
        ATTACKS[key] = AttackEntry(factory, family, papers, description)
        return factory
    return wrap


def get_attack(key: str, data_seed: int = 0, **overrides):
    """Build attack ``key`` (a :class:`~backdoor_repro.attacks.base.Attack`); unknown keys and unknown parameters
    are errors."""
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {key!r}; registered: {', '.join(sorted(ATTACKS))}")
    factory = ATTACKS[key].factory
    allowed = set(inspect.signature(factory).parameters) - {"data_seed", "common"}
    allowed |= {"target", "rate", "selection", "label_mode", "indices"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"attack {key!r} has no parameter {', '.join(sorted(unknown))}; it takes {', '.join(sorted(allowed))}")
    return factory(data_seed=data_seed, **overrides)


def canonical_overrides(key: str, overrides: dict) -> dict:
    """``overrides`` without the entries equal to the attack's own defaults, so that two descriptions of the
    same attack (``grid3`` and ``grid3`` with ``target=0``) key the same artifacts."""
    get_attack(key, **overrides)  # unknown parameters are errors
    params = inspect.signature(ATTACKS[key].factory).parameters
    base = get_attack(key)
    out = {}
    for name, value in overrides.items():
        default = params[name].default if name in params else getattr(base, name)
        if type(value) is not type(default) or value != default:
            out[name] = value
    return out
