"""The papers' headline claims and the one rule that judges them at any scale.

A :class:`Claim` (declared in its defense's protocol record) names the claim in words, the paper's number, how to
read ours off a run's tables and the rule that decides it. :func:`verdicts` judges every claim of a record on one
run's tables:

* **not run**: the claim's attacks are not in this run (another profile, a slice);
* **not testable at this scale**: the No-Defense model of a claim's attack has not learned both tasks (clean
  accuracy below :data:`LEARNED_ACC` or ASR below :data:`LEARNED_ASR`): a defense cannot be judged on a backdoor
  that is not there, nor its accuracy on a model that never had any (every smoke verdict, by design);
* **holds** / **fails**: the rule on our number.

The same rules serve every profile: on ``cpu`` they decide what the papers' claims look like at reduced width and
schedule; on ``fast`` / ``paper`` they are the reproduction's verdicts.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from .readers import acc_drop, metric, metrics_of

LEARNED_ACC = 80.0  # the No-Defense model has learned the clean task...
LEARNED_ASR = 90.0  # ...and the backdoor
REMOVED_ASR = 5.0  # "the backdoor is removed" where a paper reports an ASR of a few percent or less
ACC_SLACK = 2.0  # an accuracy cost holds if ours is at most the paper's plus this many points
RATE_SLACK = 10.0  # a rate the paper reports (RA, map coverage) holds if ours is at least the paper's minus this
OPS = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Claim:
    """One headline claim: ``ours`` (read off the tables) ``op`` ``bound`` decides it, on the attacks ``attacks``
    whose No-Defense rows are in ``table``. ``value`` is the paper's number as it states it."""

    name: str
    text: str
    value: float | str
    source: str
    table: str = ""
    attacks: tuple[str, ...] = ()
    ours: Callable[[Path], float] | None = None  # None: quoted beside ours, not judged (e.g. a notebook's column)
    op: str = "<="
    bound: float = 0.0

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"claim {self.name!r}: op must be one of {tuple(OPS)}")
        if self.ours is not None and not (self.table and self.attacks):
            raise ValueError(f"claim {self.name!r}: a judged claim names its table and attacks")

    @property
    def rule(self) -> str:
        return f"ours {self.op} {self.bound:g}"


def removes(table: str, attack: str, defense: str, paper: float, source: str, label: str) -> Claim:
    """``defense`` removes ``attack``'s backdoor: ASR at most :data:`REMOVED_ASR` (the paper's: ``paper``)."""
    return Claim(f"{defense}:{attack}:asr", f"{label} removes the {attack} backdoor (ASR %)", paper, source, table,
                 (attack,), metric(table, attack, defense, "ASR"), "<=", REMOVED_ASR)


def keeps_accuracy(table: str, attack: str, defense: str, paper_cost: float, source: str, label: str,
                   name: str = "ACC") -> Claim:
    """``defense`` costs at most the paper's clean accuracy (``paper_cost`` points vs No Defense) plus
    :data:`ACC_SLACK`."""
    return Claim(f"{defense}:{attack}:acc", f"{label} keeps clean accuracy on {attack} (points of {name} lost vs No "
                 f"Defense)", round(paper_cost, 2), source, table, (attack,), acc_drop(table, attack, defense, name),
                 "<=", round(paper_cost + ACC_SLACK, 2))


def no_defense_learned(tables: Path, table: str, attack: str) -> tuple[bool, str]:
    """Whether the No-Defense row of ``attack`` in ``table`` shows both tasks learned, and its numbers in words."""
    m = metrics_of(tables, table, attack).loc["none"]
    ok = m["ACC"] >= LEARNED_ACC and m["ASR"] >= LEARNED_ASR
    return bool(ok), f"No Defense: ACC {m['ACC']:.1f}, ASR {m['ASR']:.1f}"


def verdict(claim: Claim, tables: Path, attacks) -> dict:
    """The row of the claims table for ``claim`` on the run whose tables are in ``tables`` (``attacks``: its attacks)."""
    row = {"claim": claim.text, "paper": claim.value, "source": claim.source, "rule": claim.rule if claim.ours else "",
           "ours": None, "verdict": "quoted", "why": ""}
    if claim.ours is None:
        return row
    missing = [a for a in claim.attacks if a not in attacks]
    if missing:
        return {**row, "verdict": "not run", "why": f"{', '.join(missing)} not in this run"}
    learned = [no_defense_learned(tables, claim.table, a) for a in claim.attacks]
    ours = round(float(claim.ours(Path(tables))), 2)
    if not all(ok for ok, _ in learned):
        why = "; ".join(f"{a}: {w}" for a, (ok, w) in zip(claim.attacks, learned) if not ok)
        return {**row, "ours": ours, "verdict": "not testable at this scale",
                "why": f"the No-Defense model did not learn both tasks (ACC >= {LEARNED_ACC:g}, ASR >= "
                       f"{LEARNED_ASR:g}): {why}"}
    holds = OPS[claim.op](ours, claim.bound)
    return {**row, "ours": ours, "verdict": "holds" if holds else "fails"}


def verdicts(claims, tables: Path, attacks) -> pd.DataFrame:
    """The claims table of one run: a row per judged claim with the paper's number, ours, the rule and the verdict
    (quoted numbers, which a notebook shows beside its own columns, are left out)."""
    return pd.DataFrame([verdict(c, tables, tuple(attacks)) for c in claims if c.ours is not None],
                        columns=["claim", "paper", "source", "rule", "ours", "verdict", "why"])


def summary(table: pd.DataFrame) -> str:
    """The claims table in a sentence: how many hold, fail, or could not be tested."""
    counts = table["verdict"].value_counts()
    parts = [f"{counts[v]} {v}" for v in ("holds", "fails", "not testable at this scale", "not run") if v in counts]
    return f"{len(table)} claims: " + (", ".join(parts) if parts else "none judged")


def _listed(rows: pd.DataFrame) -> str:
    return "; ".join(f"{r.claim} (paper {r.paper}, ours {r.ours})" for r in rows.itertuples())


def conclusion(table: pd.DataFrame, scale: str) -> str:
    """The claims table in a few sentences for the end of a notebook: what held, what did not, what could not be
    tested and why, at the run's ``scale`` (report.scale_note)."""
    if not len(table):
        return f"No claim of this paper was judged on this run ({scale})."
    sentences = [f"On this run ({scale}): {summary(table)}."]
    by = {v: table[table["verdict"] == v] for v in ("holds", "fails", "not testable at this scale", "not run")}
    if len(by["holds"]):
        sentences.append(f"Held: {_listed(by['holds'])}.")
    if len(by["fails"]):
        sentences.append(f"Did not hold: {_listed(by['fails'])}.")
    if len(by["not testable at this scale"]):
        models = dict.fromkeys(part for why in by["not testable at this scale"]["why"]
                               for part in why.split("): ", 1)[-1].split("; "))
        sentences.append(f"Not testable at this scale ({len(by['not testable at this scale'])}): the No-Defense "
                         f"model did not learn both tasks (ACC >= {LEARNED_ACC:g} and ASR >= {LEARNED_ASR:g} "
                         f"needed; here {'; '.join(models)}). Judging these claims needs a profile where it does "
                         "(cpu, fast or paper).")
    if len(by["not run"]):
        sentences.append(f"Not run ({len(by['not run'])}): their attacks are not in this run (a slice or another "
                         "profile).")
    return " ".join(sentences)


def learned_summary(no_defense: pd.DataFrame, scale: str) -> str:
    """The No-Defense table (attack x metric, with ACC and ASR) in a few sentences: on which attacks the model
    learned both tasks, i.e. where the papers' claims can be judged at this ``scale``."""
    learned = (no_defense["ACC"] >= LEARNED_ACC) & (no_defense["ASR"] >= LEARNED_ASR)
    names = lambda mask: ", ".join(no_defense.index[mask]) or "none"  # noqa: E731
    return (f"On this run ({scale}), the No-Defense models reach clean accuracy {no_defense['ACC'].min():.1f} to "
            f"{no_defense['ACC'].max():.1f} % and ASR {no_defense['ASR'].min():.1f} to {no_defense['ASR'].max():.1f} "
            f"%. Both tasks learned (ACC >= {LEARNED_ACC:g}, ASR >= {LEARNED_ASR:g}), so the defenses' claims can be "
            f"judged, on: {names(learned)}; not learned on: {names(~learned)}.")
