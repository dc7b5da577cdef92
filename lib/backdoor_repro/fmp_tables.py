"""FMP's feature-map coverage (its Table 4 question: does FMP prune the maps that carry the backdoor?), the sets of
maps its runs zeroed, ANP's threshold sweep and the comparison with the paper's averages, computed for the fmp
notebook.

The "backdoor maps" of a No-Defense model are the ``k`` maps whose zeroing alone lowers the ASR most (the single-map
ablation, ties broken by the maps' order), with ``k`` the number of maps FMP ranks lowest; coverage is the share of
them among the maps a run zeroed (before fine-tuning) or ranked lowest.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .defenses.anp import holdout_threshold, oracle_threshold
from .defenses.fmp_rank import single_map_asr

ANP_TEST_SELECTED = "anp (test-selected threshold)"  # BackdoorBench's choice: lowest test ASR within acc_ratio
T1_METRICS = ("ACC", "ASR", "RA", "ACC_no_target", "CTR")


def zeroed_maps(extras: dict, convs) -> set[tuple[str, int]]:
    """``(conv, channel)`` of every map an FMP run zeroed, in the convolutions ``convs``."""
    return {(n, c) for n, chans in extras["zeroed_where"].items() if n in convs for c in chans}


def ranked_maps(extras: dict) -> set[tuple[str, int]]:
    """``(conv, channel)`` of every map an FMP run ranked lowest."""
    return {(n, c) for n, chans in extras["chosen"].items() for c in chans}


def backdoor_maps(model, triggered, target: int, k: int) -> tuple[set[tuple[str, int]], np.ndarray, set[str]]:
    """``(the k maps whose single ablation lowers the ASR most, every map's single-map ASR, the convolutions)``;
    ``triggered``: float images of non-target classes with the trigger."""
    ablation = single_map_asr(model, triggered, target)
    flat = np.concatenate([ablation[n].numpy() for n in ablation])
    names = [(n, c) for n in ablation for c in range(ablation[n].numel())]
    truth = {names[i] for i in np.argsort(flat, kind="stable")[:k]}
    return truth, flat, set(ablation)


def coverage_row(label: str, extras: dict, convs, truth: set, k: int, reported: float) -> dict:
    """One row of the coverage table for an FMP run (its stage extras)."""
    zeroed, ranked = zeroed_maps(extras, convs), ranked_maps(extras)
    return {"defense": label, "maps zeroed": len(zeroed), "backdoor maps (K)": k,
            "coverage of the zeroed maps (%)": round(100 * len(zeroed & truth) / k, 2),
            "coverage of the ranked-lowest maps (%)": round(100 * len(ranked & truth) / k, 2),
            "reported (BadNets, CIFAR-10)": reported}


def anp_test_selected(record, acc_ratio: float) -> dict:
    """The metrics of BackdoorBench's test-selected threshold, read off an ANP stage's sweep (its history)."""
    row = oracle_threshold(record.history, acc_ratio)
    return {k: row[k] for k in T1_METRICS if k in row}


def anp_sweep_frame(records: dict, acc_ratio: float) -> pd.DataFrame:
    """ANP's threshold sweep per attack (``{attack: ANP stage record}``): neurons pruned, clean-subset accuracy and the
    test metrics at each threshold, and which threshold each rule keeps (ours reads the clean subset only)."""
    rows = []
    for attack, record in records.items():
        ours = record.extras.get("threshold", holdout_threshold(record.history, acc_ratio))
        oracle = oracle_threshold(record.history, acc_ratio).get("threshold", "n/a")
        for r in record.history:
            kept = [name for name, t in (("ours", ours), ("test-selected", oracle)) if t == r["threshold"]]
            rows.append({"attack": attack, "threshold": "none" if r["threshold"] is None else r["threshold"],
                         "neurons pruned": r["pruned"], "clean-subset ACC": round(r["holdout_ACC"], 2),
                         **{k: round(r[k], 2) for k in ("ACC", "ASR", "RA") if k in r}, "kept by": ", ".join(kept)})
    return pd.DataFrame(rows)


def average_vs_reported(average: pd.DataFrame, reported: pd.DataFrame, dataset: str, profile: str,
                        attacks) -> pd.DataFrame:
    """Our means beside the paper's CIFAR-10 averages. The attack sets differ (ours: this run's attacks; the
    paper's: its Table 1 attacks), so the columns say which. The reported ANP numbers were made with BackdoorBench's
    test-selected threshold: both our ANP rows (ours, test-selected) stand beside them."""
    ours = f"ours ({dataset}, {profile}; mean over this run's attacks: {', '.join(attacks)})"
    rows = []
    for _, r in reported.iterrows():
        defense = r["defense"].lower()
        for label in (defense, ANP_TEST_SELECTED) if defense == "anp" else (defense,):
            if label in average.index:
                rows.append({"defense": label, "metric": r["metric"],
                             "reported (CIFAR-10; mean over the paper's Table 1 attacks)": r["value"],
                             ours: round(average.loc[label, r["metric"]], 2), "source": r["source"]})
    return pd.DataFrame(rows)
