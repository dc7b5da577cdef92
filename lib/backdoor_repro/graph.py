"""The stage graph: every artifact is a :class:`Stage` that names its config and its parent stages, and its cache key
is derived from them, so no key is written by hand and a change anywhere upstream rebuilds everything downstream.

::

    data = Stage("poisoned_data", {...attack, seeds, fingerprint...}, 1)
    context = Stage("model_context", {...architecture, seed, precision...}, 1)
    no_defense = Stage("no_defense", schedule, 4, (data, context))
    ft = Stage("ft", cfg, 2, (no_defense, spec.granted_stage()))   # key = hash(name, config, version, parent keys)

A stage without an artifact (the poisoned data, the model context) is a node all the same: its key is what its
children are keyed by. ``RunSpec`` builds the root stages (``spec.data_stage()``, ``spec.context_stage()``,
``spec.granted_stage()``, ``spec.no_defense_stage()``); each defense declares its own on top of them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from .cache import artifact_key


@dataclass(frozen=True, eq=False)
class Stage:
    """One node: ``name`` (the artifact folder), ``config`` (plain values and dataclasses), the stage's code
    ``version`` and its ``parents``. Two stages are equal when their keys are."""

    name: str
    config: Any
    version: int
    parents: tuple["Stage", ...] = field(default=())

    def __post_init__(self):
        names = [p.name for p in self.parents]
        if len(set(names)) != len(names):
            raise ValueError(f"stage {self.name}: two parents share a name ({names})")
        if not all(isinstance(p, Stage) for p in self.parents):
            raise TypeError(f"stage {self.name}: parents must be Stage objects")

    @functools.cached_property
    def key(self) -> str:
        """The hash of the name, config, version and the parents' keys."""
        return artifact_key(self.name, {"config": self.config, "parents": self.parent_keys()}, self.version)

    def parent_keys(self) -> list[list[str]]:
        return [[p.name, p.key] for p in self.parents]

    def describe(self) -> dict:
        """What an artifact's metadata records: name, version, config and the parents' names and keys."""
        return {"stage": self.name, "version": self.version, "config": self.config, "parents": self.parent_keys()}

    def evaluated_on(self, fingerprint: str) -> "Stage":
        """This stage for a build that evaluates on a test set while it trains: the test set joins the key, so a
        cached history never depends on who called first."""
        return Stage(self.name, {"stage": self.config, "evaluated_on": fingerprint}, self.version, self.parents)

    def ancestors(self) -> list["Stage"]:
        """Every stage upstream of this one, each once, parents before children."""
        seen: dict[str, Stage] = {}

        def visit(stage: Stage) -> None:
            for parent in stage.parents:
                if parent.key not in seen:
                    visit(parent)
                    seen[parent.key] = parent
        visit(self)
        return list(seen.values())

    def __eq__(self, other) -> bool:
        return isinstance(other, Stage) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"<stage {self.name} {self.key}>"
