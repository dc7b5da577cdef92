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

from .claims import Claim
from .readers import metric

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
class ProtocolRecord:
    """What one paper's notebook runs. ``attacks``: per profile, or per ``"profile:dataset"`` where a dataset has its
    own list (looked up first); ``sections``: a notebook section (a figure, an ablation, a cross-paper table) -> the
    attacks it runs, per profile or ``"*"`` for every profile."""

    notebook: str
    attacks: Mapping[str, tuple[str, ...]] | Callable[[str, str], tuple[str, ...]]
    sections: Mapping[str, Mapping[str, tuple[str, ...]] | Callable[[str, str], tuple[str, ...]]] = \
        field(default_factory=dict)
    checks: Mapping[str, tuple[Check, ...]] = field(default_factory=dict)  # per profile: where each was measured
    claims: tuple[Claim, ...] | Callable[[tuple[str, ...]], tuple[Claim, ...]] = ()  # or: the run's attacks -> claims
    seeds: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # training seeds per profile (default: one)

    def __post_init__(self):
        from .attacks import ATTACKS
        named = [a for checks in self.checks.values() for c in checks for a in c.attacks]
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

    def seeds_for(self, profile: str) -> tuple[int, ...]:
        return tuple(self.seeds.get(profile, (0,)))

    def claims_for(self, attacks) -> tuple[Claim, ...]:
        """The claims of a run on ``attacks`` (a record whose claims depend on the run's attacks computes them)."""
        return tuple(self.claims(tuple(attacks)) if callable(self.claims) else self.claims)

    def claim(self, name: str, attacks=()) -> Claim:
        """The claim ``name`` (a quoted number, e.g. a column beside ours, or a judged claim)."""
        for c in self.claims_for(attacks):
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


def no_defense_bar(table: str, attacks, accuracy: float = 80, asr: float = 90) -> tuple[Check, ...]:
    """The No-Defense model has learned both tasks, or nothing is tested: clean accuracy and ASR of each attack's
    ``none`` row in ``table`` at least ``accuracy`` and ``asr`` (the cpu profile's bar)."""
    return tuple(c for a in attacks for c in (
        Check(f"{a}: ACC, no defense", ">=", accuracy, metric(table, a, "none", "ACC"), (a,)),
        Check(f"{a}: ASR, no defense", ">=", asr, metric(table, a, "none", "ASR"), (a,))))


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
    checks = record.checks.get(profile)
    if not checks:
        return [f"no checks on the {profile} profile (checks exist for: {', '.join(record.checks) or 'none'})"]
    rows = check_rows(checks, tables, num_classes, attacks)
    failed = [f"{r['quantity']}: {r['value']} (needs {r['check']})" for r in rows if r["margin"] < 0]
    if failed:
        raise AssertionError("checks failed:\n" + "\n".join(failed))
    skipped = [c.quantity for c in checks if not set(c.attacks) <= set(attacks)]
    lines = [f"holds: {r['quantity']} {r['check']}" for r in rows]
    return lines + [f"skipped (its attacks are not in this run): {q}" for q in skipped]
