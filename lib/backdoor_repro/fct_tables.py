"""FCT's tables beside the numbers its README and paper report: our tidy rows in FCT's terms, then joined.

FCT measures ACC on the non-target test images (our ``ACC_no_target``), except for all-to-all attacks, which have
no target class: there its code's ACC is on every test image (our ``ACC``). Its D-BR and D-ST numbers come from
test-selected epochs (D-BR: the epoch of best ACC − ASR; D-ST: the classifier epoch of best clean test accuracy), so
each test-selected row (the defense's name + :data:`TEST_SELECTED`) is joined with the same reported numbers as the
defense's last-epoch row, under its own name. Its SS-CTL ablation names each encoder "D-ST with <name> extractor".
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
    """T1 beside the README: last-epoch rows, then the test-selected rows (D-BR's, D-ST's) against the same
    reported numbers as their defense's last-epoch rows."""
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


# FCT-T2's verdict: FCT reports that DBD fails on its attacks; our DBD supports that report where the backdoor's
# effect stays at least this large, and DBD's own claim only where it also keeps accuracy (a backdoor removed by a
# collapsed model says nothing about either paper)
T2_FAILURE_EFFECT = 50  # points of ASR over the clean->target rate (chance for all2all)
T2_ACCURACY_TIMES_CHANCE = 3


def t2_verdict(t2: pd.DataFrame, attacks, num_classes: int) -> pd.DataFrame:
    """Per attack, which paper our DBD run supports: FCT's report that DBD fails, DBD's claim, or neither."""
    chance = 100 / num_classes
    rows = []
    for attack in attacks:
        m = report.wide(t2[t2["attack"] == attack], "defense", "metric").loc["dbd"]
        # all2all has no single target, so no clean->target rate: its baseline is chance
        base, base_name = (m["CTR"], "CTR") if pd.notna(m.get("CTR")) else (chance, "chance, all2all")
        effect = m["ASR"] - base
        acc = fct_accuracy(m)  # FCT's ACC: on the non-target test images (on every image for all2all)
        if effect >= T2_FAILURE_EFFECT:
            supports = "FCT's report that DBD fails here"
        elif acc >= T2_ACCURACY_TIMES_CHANCE * chance:
            supports = "DBD's claim (the backdoor is removed and accuracy kept), not FCT's report of failure"
        else:
            supports = (f"neither claim: the backdoor is removed, but DBD's accuracy ({acc:.1f}) is under "
                        f"{T2_ACCURACY_TIMES_CHANCE} x chance")
        rows.append({"attack": attack, "DBD ASR": m["ASR"], "baseline": base_name, "baseline value": base,
                     "backdoor effect": effect, "DBD ACC (as FCT)": acc, "supports": supports})
    return pd.DataFrame(rows).round(2)
