"""No Defense: the model the attacker's poisoned set produces under the run's No-Defense schedule
(``spec.supervised``). Trained once per spec and reused by every defense that starts from it."""
from __future__ import annotations

from dataclasses import dataclass

from ..pipeline import supervised_model
from .base import PROFILE_NAMES, Defense, DefenseResult, register_defense


@dataclass(frozen=True)
class NoDefenseConfig:
    """Nothing to configure: the schedule is the spec's (``RunSpec.supervised``, set by the profile)."""


class NoDefense(Defense):
    key = "none"
    paper = "attacks"
    title = "No Defense (the backdoored model)"
    configs = {p: NoDefenseConfig() for p in PROFILE_NAMES}
    deviations = {p: () for p in PROFILE_NAMES}  # the profile's own deviations cover its schedule

    def shortened(self, cfg):
        return cfg

    def run(self, spec, data, cfg=None, cache=None, progress=False) -> DefenseResult:
        self.check(spec, data)
        model, record = supervised_model(spec, None, cache, progress, data=data)
        return DefenseResult(model, {"no_defense": record})


register_defense(NoDefense())
