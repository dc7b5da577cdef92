"""FCT's tables beside the numbers its README and paper report: our tidy rows in FCT's terms, then joined.

FCT measures ACC on the non-target test images (our ``ACC_no_target``), except for all-to-all attacks, which have
no target class: there its code's ACC is on every test image (our ``ACC``). Its D-BR numbers are test-selected
(the epoch of best ACC − ASR), so our test-selected D-BR row is joined with the same reported D-BR numbers as our
last-epoch row, under its own name. Its SS-CTL ablation names each encoder "D-ST with <name> extractor".
"""
from __future__ import annotations

import pandas as pd

from . import report

TEST_SELECTED = " (test-selected epoch)"
FCT_ACC = "ACC_no_target"  # our metric for the ACC FCT reports, where the attack has a target (else ACC)


def fct_accuracy(metrics) -> float:
    """The ACC FCT reports from one model's metrics (a dict or Series): ``ACC_no_target``, or ``ACC`` for an
    all-to-all attack, which has no target."""
    value = metrics.get(FCT_ACC)
    return metrics["ACC"] if value is None or pd.isna(value) else value


def as_fct_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """The ASR rows and, per attack, the ACC FCT reports: ``ACC_no_target`` where the attack has one (renamed
    ``ACC``), else ``ACC`` (all-to-all)."""
    with_target = set(table.loc[table["metric"] == FCT_ACC, "attack"])
    keep = (table["metric"].isin(["ASR", FCT_ACC])
            | ((table["metric"] == "ACC") & ~table["attack"].isin(with_target)))
    return table[keep].assign(metric=table.loc[keep, "metric"].replace({FCT_ACC: "ACC"}))


def compare_t1(t1: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    """T1 beside the README: last-epoch rows, then the test-selected D-BR rows against the same D-BR numbers."""
    view = as_fct_metrics(t1)
    selected = view["defense"].str.endswith(TEST_SELECTED)
    last = report.compare_with_reported(view[~selected], reported)
    oracle = report.compare_with_reported(
        view[selected].assign(defense=view.loc[selected, "defense"].str.removesuffix(TEST_SELECTED)), reported)
    return pd.concat([last, oracle.assign(defense=oracle["defense"] + TEST_SELECTED)], ignore_index=True)


def compare_t4(t4: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    """The SS-CTL ablation (rows with an ``encoder`` column: CTL, S-CTL, SS-CTL) beside the paper's."""
    view = as_fct_metrics(t4)
    view = view.assign(defense="D-ST with " + view["encoder"] + " extractor")
    return report.compare_with_reported(view, reported)
