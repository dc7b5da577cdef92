"""No Defense: the model the attacker's poisoned set produces under the run's No-Defense schedule
(``spec.no_defense_schedule``). Trained once per spec and reused by every defense that starts from it."""
from __future__ import annotations

from dataclasses import dataclass

from ..pipeline import no_defense_model
from ..readers import effect, metric
from ..records import Check, ProtocolRecord, no_defense_bar
from .base import PROFILE_NAMES, Defense, DefenseResult, register_defense

GALLERY = ("badnets_dbd_2x2", "grid3", "white3_fct", "white3_bb", "blend_kitty_dbd", "blend_kitty_bb",
           "blend_strip_fct", "blend_noise", "trojan3_fct", "sig_fct", "sig_tr_wrapped", "wanet", "lc_dbd")
FULL_TABLE = ("badnets_dbd_2x2", "blend_kitty_dbd", "grid3", "white3_fct", "trojan3_fct", "blend_strip_fct",
              "blend_kitty_fct", "sig_fct", "wanet", "lc_dbd")
_CHECKED = ("badnets_dbd_2x2", "blend_kitty_fct")
# cpu: the two No-Defense models the DBD notebook starts from and the two the grid's common protocol does
CPU_TABLE = ("badnets_dbd_2x2", "blend_kitty_dbd", "grid3", "blend_kitty_fct")
# the attacks notebook: the trigger gallery and the No-Defense table
NO_DEFENSE_RECORD = ProtocolRecord(
    notebook="attacks",
    attacks={"smoke": ("badnets_dbd_2x2", "blend_kitty_fct", "grid3"), "cpu": CPU_TABLE, "fast": FULL_TABLE,
             "paper": FULL_TABLE},
    sections={"gallery": {"*": GALLERY}},
    checks={"smoke": tuple(c for a in _CHECKED for c in (
        Check(f"{a}: ASR - CTR, no defense", ">=", 40, effect("no_defense", a, "none"), (a,)),
        Check(f"{a}: ACC, no defense", ">=", 35, metric("no_defense", a, "none", "ACC"), (a,)))),
        "cpu": no_defense_bar("no_defense", CPU_TABLE)},
)


@dataclass(frozen=True)
class NoDefenseConfig:
    """Nothing to configure: the schedule is the spec's (``RunSpec.no_defense_schedule``, set by the profile)."""


class NoDefense(Defense):
    key = "none"
    paper = "attacks"
    title = "No Defense (the backdoored model)"
    configs = {p: NoDefenseConfig() for p in PROFILE_NAMES}
    deviations = {p: () for p in PROFILE_NAMES}  # the profile's own deviations cover its schedule
    record = NO_DEFENSE_RECORD
    reads_poisoned_set = False

    def defend(self, spec, data, cfg, cache, progress) -> DefenseResult:
        model, record = no_defense_model(spec, None, cache, progress, data=data)
        return DefenseResult(model, {"no_defense": record})


register_defense(NoDefense())
