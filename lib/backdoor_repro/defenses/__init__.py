"""Defenses behind one contract (:mod:`.base`), one module each, and their registry.

``none`` is No Defense (the backdoored model); ``dbd`` is DBD; ``trap_and_replace`` is Trap and Replace;
``fct_dst`` and ``fct_dbr`` are FCT's two defenses; ``fmp`` is FMP and ``ft``, ``fp``, ``anp`` the baselines of
its table. A new defense is a module that subclasses
:class:`Defense`, calls :func:`register_defense`, and is imported here; the contract test then covers it.
"""
from .base import DEFENSES, NEEDS, Defense, DefenseResult, get_defense, register_defense
from . import none, dbd, trap_and_replace, fct, fmp, finetune_pruning, anp  # noqa: E402,F401  (registration)

__all__ = ["DEFENSES", "NEEDS", "Defense", "DefenseResult", "get_defense", "register_defense"]
