"""Defenses, one module each, and their registry (key -> module with its stage functions).

``none`` is No Defense (the supervised backdoored model of :mod:`backdoor_repro.pipeline`).
"""
from __future__ import annotations

DEFENSES = {
    "none": "backdoor_repro.pipeline",
    "dbd": "backdoor_repro.defenses.dbd",
}


def get_defense(key: str):
    """The module implementing defense ``key``; unknown keys are errors."""
    import importlib

    if key not in DEFENSES:
        raise ValueError(f"unknown defense {key!r}; registered: {', '.join(sorted(DEFENSES))}")
    return importlib.import_module(DEFENSES[key])
