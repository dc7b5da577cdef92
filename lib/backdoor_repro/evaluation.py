"""Evaluate a model against an attack: ACC, ACC without the target class, ASR, RA and CTR."""
from __future__ import annotations

import torch

from . import metrics
from .attacks import Attack
from .data import ImageSet
from .train import predict


def evaluate(model: torch.nn.Module, spec, test: ImageSet) -> dict:
    """ACC / ASR / RA / ACC_no_target / CTR of ``model`` against ``spec``'s attack (ACC only for a clean spec)."""
    if spec.attack is None:
        device = next(model.parameters()).device
        return {"ACC": metrics.accuracy(predict(model, test.images), test.labels.to(device))}
    return AttackEvaluator(spec.make_attack(), test)(model)


class AttackEvaluator:
    """Builds the triggered test population once and scores any number of models on it."""

    def __init__(self, attack: Attack, test: ImageSet):
        self.attack, self.test = attack, test
        self.triggered, self.attack_labels, self.true_labels = attack.test_population(test)

    def __call__(self, model: torch.nn.Module) -> dict:
        clean_pred = predict(model, self.test.images)
        bd_pred = predict(model, self.triggered)
        target = self.attack.target
        out = {"ACC": metrics.accuracy(clean_pred, self.test.labels.to(clean_pred.device)),
               "ASR": metrics.attack_success_rate(bd_pred, self.attack_labels.to(bd_pred.device)),
               "RA": metrics.robust_accuracy(bd_pred, self.true_labels.to(bd_pred.device))}
        if self.attack.label_mode != "all2all":
            labels = self.test.labels.to(clean_pred.device)
            out["ACC_no_target"] = metrics.accuracy_without_class(clean_pred, labels, target)
            out["CTR"] = metrics.clean_to_target_rate(clean_pred, labels, target)
        return out
