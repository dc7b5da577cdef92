"""The papers' reported numbers (``tables/reported/*.csv``) with their names mapped to registry keys.

This module is the one place where a paper's attack or defense name is translated into ours.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .paths import project_root

# (paper, name as printed in the paper) -> attack registry key
ATTACK_NAMES = {
    ("dbd", "BadNets"): "badnets_dbd_2x2",
    ("dbd", "Blended"): "blend_kitty_dbd",
    # DBD re-run by the FCT authors uses FCT's attacks
    ("dbd", "BadNets-all2one"): "grid3",
    ("dbd", "BadNets-all2all"): "white3_fct",
    ("dbd", "Trojan"): "trojan3_fct",
    ("dbd", "Blend-Strip"): "blend_strip_fct",
    ("dbd", "Blend-Kitty"): "blend_kitty_fct",
    ("dbd", "SIG"): "sig_fct",
    ("dbd", "CL"): "cl_fct",
    ("fct", "BadNets-all2one"): "grid3",
    ("fct", "BadNets-all2all"): "white3_fct",
    ("fct", "Trojan"): "trojan3_fct",
    ("fct", "Blend-Strip"): "blend_strip_fct",
    ("fct", "Blend-Kitty"): "blend_kitty_fct",
    ("fct", "SIG"): "sig_fct",
    ("fct", "CL"): "cl_fct",
    ("fct", "SSBA"): "ssba",
    ("fmp", "BadNets"): "white3_bb",
}

# name as printed -> defense registry key ("none" = No Defense)
DEFENSE_NAMES = {
    "No Defense": "none",
    "Backdoored": "none",
    "DBD": "dbd",
    "DBD (re-run by FCT authors)": "dbd",
    "D-ST": "fct_dst",
    "D-BR": "fct_dbr",
    "FMP": "fmp",
}

COLUMNS = ["paper", "table", "dataset", "model", "attack", "defense", "metric", "value"]


def reported_dir() -> Path:
    return project_root() / "tables" / "reported"


def load_reported(paper: str | None = None) -> pd.DataFrame:
    """All reported rows (optionally of one paper) with ``attack``/``defense`` as registry keys.

    The papers' own names stay in ``attack_name`` / ``defense_name``; names with no registry key
    (averages, headline quantities, baselines we do not implement) keep their printed name.
    """
    frames = [pd.read_csv(f) for f in sorted(reported_dir().glob("*.csv"))]
    df = pd.concat(frames, ignore_index=True)
    if paper is not None:
        df = df[df["paper"] == paper].copy()
    df["attack_name"], df["defense_name"] = df["attack"], df["defense"]
    df["attack"] = [ATTACK_NAMES.get((p, a), a) for p, a in zip(df["paper"], df["attack"])]
    df["defense"] = [DEFENSE_NAMES.get(d, d) for d in df["defense"]]
    return df.reset_index(drop=True)


def claims(paper: str | None = None, **where) -> pd.DataFrame:
    """Reported rows of ``paper`` whose columns equal ``where`` (a list or tuple value matches any of its items),
    e.g. ``claims("dbd", table="readme_results")`` or ``claims(defense="none", dataset="CIFAR-10")``."""
    df = load_reported(paper)
    unknown = sorted(set(where) - set(df.columns))
    if unknown:
        raise ValueError(f"reported numbers have no column {', '.join(unknown)}; columns: {', '.join(df.columns)}")
    for column, value in where.items():
        df = df[df[column].isin(value if isinstance(value, (list, tuple)) else [value])]
    return df.reset_index(drop=True)
