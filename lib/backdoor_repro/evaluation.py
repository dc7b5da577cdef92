"""Evaluate a model against an attack: ACC, ACC without the target class, ASR, RA and CTR."""
from __future__ import annotations

import dataclasses

import torch

from . import metrics
from .attacks import Attack
from .cache import load_artifact
from .data import ImageSet
from .train import predict


def evaluated_attack(spec, cache=None) -> Attack:
    """The attack whose trigger builds ``spec``'s test population: ``spec.make_attack()``, except where the trigger
    is learned by the attack's training (its loop config has ``trigger_from_training``: Input-aware), rebuilt from
    the extras of the ``attack_training`` stage, or optimised on the clean model (``Attack.trigger_search``:
    TrojanNN), read from ``spec.trigger_stage()``; both stored in ``cache`` (an ArtifactCache). Every evaluation of a
    spec (No-Defense and every defense) builds its test population from this."""
    attack = spec.make_attack()
    if attack.trigger_from_clean_model:
        stored = _stored(attack, spec.trigger_stage(), cache, "is optimised on the clean model",
                         "build the poisoned set first (pipeline.run_data)")
        return dataclasses.replace(attack, trigger=attack.trigger_search.trigger(stored))
    rebuild = getattr(attack.training, "trigger_from_training", None)
    if rebuild is None:
        return attack
    stored = _stored(attack, spec.no_defense_stage(), cache, "comes from its trained generators",
                     "train it first (pipeline.no_defense_model)")
    return dataclasses.replace(attack, trigger=rebuild(stored["extras"]))


def _stored(attack: Attack, stage, cache, origin: str, remedy: str) -> dict:
    """The artifact of ``stage`` in ``cache``, or a ``ValueError`` that says where the attack's test trigger comes
    from and how to build it."""
    if cache is None:
        raise ValueError(f"{attack.key}'s test trigger {origin}: pass the cache that holds its {stage.name} stage")
    stored = load_artifact(cache.path(stage), stage.key)
    if stored is None:
        raise ValueError(f"{attack.key}'s test trigger {origin}, and the {stage.name} stage {stage.key} is not in "
                         f"the cache: {remedy}")
    return stored


def evaluate(model: torch.nn.Module, spec, test: ImageSet, cache=None) -> dict:
    """ACC / ASR / RA / ACC_no_target / CTR of ``model`` against ``spec``'s attack (ACC only for a clean spec);
    ``cache``: where a learned trigger's networks are stored (:func:`evaluated_attack`)."""
    if spec.attack is None:
        device = next(model.parameters()).device
        return {"ACC": metrics.accuracy(predict(model, test.images), test.labels.to(device))}
    return AttackEvaluator(evaluated_attack(spec, cache), test)(model)


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
