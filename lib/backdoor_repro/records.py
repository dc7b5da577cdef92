"""Protocol records: what each paper's notebook runs and checks, declared once beside its defense (the timm
``default_cfg`` shape). A :class:`ProtocolRecord` names the notebook, its attacks per profile and dataset, the
attacks of its figures and ablations (``sections``), the paper's numbers that the notebook quotes (``claims``) and
the smoke checks (``checks``): each a threshold on a quantity read off the run's tables. The notebooks, the grid,
``seed_spread`` and the tests read the records; a notebook defines no attack list and no threshold.

A check reads the tables a run wrote (``tables/<profile>/<name>.csv``), so the notebook that asserts it and
``seed_spread``, which re-reads it across seeds, apply the same rule to the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

OPS = (">=", "<=")


@dataclass(frozen=True)
class Check:
    """``value(tables) op threshold`` (× chance, 100 / classes, where ``times_chance``), needing ``attacks``."""

    quantity: str
    op: str
    threshold: float
    value: Callable[[Path], float]
    attacks: tuple[str, ...] = ()  # skipped in a slice without them
    times_chance: bool = False

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"check {self.quantity!r}: op must be one of {OPS}")

    def bound(self, num_classes: int | None) -> float:
        if self.times_chance and not num_classes:
            raise ValueError(f"check {self.quantity!r} is relative to chance: give the number of classes")
        return self.threshold * 100 / num_classes if self.times_chance else self.threshold

    def describe(self) -> str:
        return f"{self.op} {self.threshold:g}" + (" x chance" if self.times_chance else "")

    def margin(self, value: float, num_classes: int | None) -> float:
        """How far ``value`` is on the passing side of the bound (negative: the check fails)."""
        bound = self.bound(num_classes)
        return value - bound if self.op == ">=" else bound - value


@dataclass(frozen=True)
class Claim:
    """A number the paper (or its repository) reports that a notebook shows beside ours."""

    name: str
    value: float | str
    source: str


@dataclass(frozen=True)
class ProtocolRecord:
    """What one paper's notebook runs. ``attacks``: per profile, or per ``"profile:dataset"`` where a dataset has its
    own list (looked up first); ``sections``: a notebook section (a figure, an ablation, a cross-paper table) -> the
    attacks it runs, per profile or ``"*"`` for every profile."""

    notebook: str
    attacks: Mapping[str, tuple[str, ...]] | Callable[[str, str], tuple[str, ...]]
    sections: Mapping[str, Mapping[str, tuple[str, ...]] | Callable[[str, str], tuple[str, ...]]] = \
        field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    claims: tuple[Claim, ...] = ()
    check_profiles: tuple[str, ...] = ("smoke",)  # where the checks' thresholds were measured

    def __post_init__(self):
        from .attacks import ATTACKS
        named = [a for c in self.checks for a in c.attacks]
        for table in (self.attacks, *self.sections.values()):
            if not callable(table):
                named += [a for attacks in table.values() for a in attacks]
        unknown = sorted({a for a in named if a not in ATTACKS})
        if unknown:
            raise ValueError(f"{self.notebook}: unknown attacks {unknown}")

    def attacks_for(self, profile: str, dataset: str) -> tuple[str, ...]:
        """The attacks of the notebook's main table on ``profile`` and ``dataset``."""
        return _lookup(self.attacks, profile, dataset, f"{self.notebook}: no attack list")

    def section(self, name: str, profile: str, dataset: str = "") -> tuple[str, ...]:
        """The attacks of a section (a figure, an ablation) on ``profile`` (and ``dataset``)."""
        return _lookup(self.sections[name], profile, dataset, f"{self.notebook}: section {name!r} has no attacks")

    def claim(self, name: str) -> Claim:
        for c in self.claims:
            if c.name == name:
                return c
        raise KeyError(f"{self.notebook}: no claim {name!r}")


def _lookup(table, profile: str, dataset: str, missing: str) -> tuple[str, ...]:
    if callable(table):
        return tuple(table(profile, dataset))
    for key in (f"{profile}:{dataset}", profile, "*"):
        if key in table:
            return tuple(table[key])
    raise ValueError(f"{missing} for profile {profile!r} on {dataset!r} (known: {', '.join(table)})")


# ------------------------------------------------------------------------------------------- reading the tables
def metrics_of(tables: Path, name: str, attack: str) -> pd.DataFrame:
    """``defense x metric`` of one attack in a tidy table (mean over seeds where a table has several)."""
    frame = pd.read_csv(Path(tables) / f"{name}.csv")
    frame = frame[frame["attack"] == attack]
    if frame.empty:
        raise KeyError(f"{name}.csv has no rows for {attack}")
    return frame.groupby(["defense", "metric"])["value"].mean().unstack("metric")


def effect(table: str, attack: str, defense: str) -> Callable[[Path], float]:
    """The backdoor's own effect, ASR − CTR, of ``defense`` on ``attack``."""
    def read(tables: Path) -> float:
        m = metrics_of(tables, table, attack).loc[defense]
        return float(m["ASR"] - m["CTR"])
    return read


def effect_drop(table: str, attack: str, defense: str) -> Callable[[Path], float]:
    """How much ``defense`` lowers the effect from No Defense."""
    def read(tables: Path) -> float:
        return effect(table, attack, "none")(tables) - effect(table, attack, defense)(tables)
    return read


def metric(table: str, attack: str, defense: str, name: str) -> Callable[[Path], float]:
    def read(tables: Path) -> float:
        return float(metrics_of(tables, table, attack).loc[defense, name])
    return read


def column(table: str, attack: str, name: str) -> Callable[[Path], float]:
    """A column of a wide per-attack table (e.g. FCT's split quality)."""
    def read(tables: Path) -> float:
        return float(pd.read_csv(Path(tables) / f"{table}.csv").set_index("attack").loc[attack, name])
    return read


def ratio(numerator: Callable[[Path], float], denominator: Callable[[Path], float]) -> Callable[[Path], float]:
    def read(tables: Path) -> float:
        return numerator(tables) / denominator(tables)
    return read


# ------------------------------------------------------------------------------------------- applying the checks
def check_rows(checks, tables: Path, num_classes: int | None, attacks=None) -> list[dict]:
    """One row per check that applies (its attacks ran): quantity, the rule, the value and the margin."""
    rows = []
    for check in checks:
        if attacks is not None and not set(check.attacks) <= set(attacks):
            continue
        value = check.value(Path(tables))
        rows.append({"quantity": check.quantity, "check": f"{check.op} {check.bound(num_classes):g}", "value": round(value, 2),
                     "margin": round(check.margin(value, num_classes), 2)})
    return rows


def assert_checks(record: ProtocolRecord, tables: Path, num_classes: int | None, attacks: tuple[str, ...], profile: str,
                  dry_run: bool = False) -> list[str]:
    """Apply ``record``'s checks to the tables a run wrote; raise ``AssertionError`` naming every failed one with its
    value. Returns the lines to print (stable across machines: the rules, not the values)."""
    if dry_run:
        return ["dry run: results not checked (a couple of steps per stage)"]
    if profile not in record.check_profiles:
        return [f"no checks on the {profile} profile (their thresholds were measured on {', '.join(record.check_profiles)})"]
    rows = check_rows(record.checks, tables, num_classes, attacks)
    failed = [f"{r['quantity']}: {r['value']} (needs {r['check']})" for r in rows if r["margin"] < 0]
    if failed:
        raise AssertionError("checks failed:\n" + "\n".join(failed))
    skipped = [c.quantity for c in record.checks if not set(c.attacks) <= set(attacks)]
    lines = [f"holds: {r['quantity']} {r['check']}" for r in rows]
    return lines + [f"skipped (its attacks are not in this run): {q}" for q in skipped]
