"""One definition per metric; every value is a percentage.

* ACC — accuracy on the full clean test set (``acc``); FCT also reports it without the target class
  (``acc_without_target``).
* ASR — share of the attack's test population (non-target test images with the trigger; every
  image for all-to-all) predicted as the attack label.
* RA  — robust accuracy: share of the same triggered images predicted as their true label.
* CTR — clean→target rate: share of *clean* non-target test images predicted as the target. ASR − CTR
  is the backdoor's own effect (a weak model's class bias inflates ASR without any backdoor).
* AUROC, TPR, FPR — poisoned-sample detection (positives = poisoned samples).
* DER — defense effectiveness rating (FCT/BackdoorBench):
  ``(max(0, ΔASR) − max(0, ΔACC) + 100) / 2`` with Δ = before − after, in points.
"""
from __future__ import annotations

import torch


def _percent(hits: torch.Tensor) -> float:
    if hits.numel() == 0:
        raise ValueError("metric over an empty population")
    return 100.0 * hits.double().mean().item()


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return _percent(pred == labels)


def accuracy_without_class(pred: torch.Tensor, labels: torch.Tensor, excluded: int) -> float:
    keep = labels != excluded
    return _percent(pred[keep] == labels[keep])


def attack_success_rate(pred_triggered: torch.Tensor, attack_labels: torch.Tensor) -> float:
    return _percent(pred_triggered == attack_labels)


def robust_accuracy(pred_triggered: torch.Tensor, true_labels: torch.Tensor) -> float:
    return _percent(pred_triggered == true_labels)


def clean_to_target_rate(pred_clean: torch.Tensor, labels: torch.Tensor, target: int) -> float:
    keep = labels != target
    return _percent(pred_clean[keep] == target)


def defense_effectiveness_rating(acc_before: float, asr_before: float, acc_after: float, asr_after: float) -> float:
    return (max(0.0, asr_before - asr_after) - max(0.0, acc_before - acc_after) + 100.0) / 2.0


def auroc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive), in percent.

    Mann–Whitney form with average ranks for ties: 50 = chance, 100 = every positive scores above
    every negative.
    """
    s, pos = scores.detach().double().flatten().cpu(), positives.bool().flatten().cpu()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one positive and one negative")
    sorted_s, order = torch.sort(s)
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average_rank = (ends - counts + 1 + ends) / 2
    ranks = torch.empty_like(s)
    ranks[order] = average_rank[inverse]
    u = ranks[pos].sum().item() - n_pos * (n_pos + 1) / 2
    return 100.0 * u / (n_pos * n_neg)


def detection_rates(flagged: torch.Tensor, positives: torch.Tensor) -> dict:
    """TPR (flagged positives / positives) and FPR (flagged negatives / negatives), in percent."""
    flagged, positives = flagged.bool(), positives.bool()
    return {"TPR": _percent(flagged[positives]), "FPR": _percent(flagged[~positives])}
