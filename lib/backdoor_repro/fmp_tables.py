"""FMP's feature-map coverage (its Table 4 question: does FMP prune the maps that carry the backdoor?) and the sets of
maps its runs zeroed, computed once for the fmp notebook.

The "backdoor maps" of a No-Defense model are the ``k`` maps whose zeroing alone lowers the ASR most (the single-map
ablation, ties broken by the maps' order), with ``k`` the number of maps FMP ranks lowest; coverage is the share of
them among the maps a run zeroed (before fine-tuning) or ranked lowest.
"""
from __future__ import annotations

import numpy as np

from .defenses.fmp_rank import single_map_asr


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
