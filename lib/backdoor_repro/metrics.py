"""One definition per metric; every value is a percentage.

* ACC — accuracy on the full clean test set (``acc``); FCT also reports it without the target class
  (``acc_without_target``).
* ASR — share of the attack's test population (non-target test images with the trigger; every
  image for all-to-all) predicted as the attack label.
* RA  — robust accuracy: share of the same triggered images predicted as their true label.
* CTR — clean→target rate: share of *clean* non-target test images predicted as the target. ASR − CTR
  is the backdoor's own effect (a weak model's class bias inflates ASR without any backdoor).
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
