"""Quantities read off a run's tables (``tables/<profile>/<name>.csv``): what the protocol records' checks and the
papers' claims are judged on, so a notebook, ``seed_spread`` and the claims tables read the same numbers."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd


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


def acc_drop(table: str, attack: str, defense: str, name: str = "ACC") -> Callable[[Path], float]:
    """Clean accuracy lost from No Defense to ``defense`` (points; negative: gained)."""
    def read(tables: Path) -> float:
        m = metrics_of(tables, table, attack)
        return float(m.loc["none", name] - m.loc[defense, name])
    return read


def mean_over(reader: Callable[[str], Callable[[Path], float]], attacks) -> Callable[[Path], float]:
    """The mean of ``reader(attack)`` over ``attacks``."""
    def read(tables: Path) -> float:
        return sum(reader(a)(tables) for a in attacks) / len(attacks)
    return read
