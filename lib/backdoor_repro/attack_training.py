"""The training loop of a training-controlled attack: the poisoning happens inside the attacker's training, so the
No-Defense model is this loop's product (the ``attack_training`` stage, ``RunSpec.no_defense_stage``) and there is no
fixed poisoned training set.

``LOOPS`` maps a loop's name (``attack.training.loop``) to its trainer, ``(spec, attack, model, images, labels,
checkpoint, progress) -> (TrainResult, extras)``; the extras join the stage's artifact (Input-aware's trained
generators, from which ``evaluation.evaluated_attack`` rebuilds its test trigger). WaNet's loop is an
:class:`~backdoor_repro.train.Objective` of the shared supervised loop (resumable, the spec's optimizer, the attack's
schedule from ``RunSpec.attacker_schedule``): it receives the clean, un-augmented batch and builds the attacker's
batch itself. Input-aware's (:mod:`.attack_inputaware`) runs its mask stage on the shared loop and its joint stage
(two optimizers) on the shared resume machinery.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .attack_inputaware import train_inputaware
from .attacks import Attack, PoisonedSet
from .attacks.post_tensor import post_tensor_transform
from .attacks.wanet import warp_grid
from .attacks.wanet_inloop import batch_counts, compose_batch
from .data import ImageSet
from .datasets import is_cifar10
from .train import Objective, TrainResult, model_input, train_model


class WanetObjective(Objective):
    """BackdoorBench's WaNet train step: poisoned, cross and clean parts of each batch (``wanet_inloop``), the
    post-tensor transform, cross-entropy on the composed labels. The loop's running ``train_acc`` counts every sample
    against its true label (a poisoned sample predicted as the target counts as wrong)."""

    def __init__(self, attack: Attack, grid: torch.Tensor, num_classes: int, flip: bool, fill):
        self.attack, self.loop, self.grid = attack, attack.training, grid
        self.num_classes, self.flip, self.fill = num_classes, flip, fill

    def poisoned_labels(self, y: torch.Tensor) -> torch.Tensor:
        return self.attack.poisoned_labels(y, self.num_classes)

    def loss(self, model, x, y, gen, idx):
        counts = batch_counts(x.shape[0], self.attack.rate, self.loop.cross_ratio, gen)
        inputs, targets = compose_batch(x, y, self.grid, counts, self.poisoned_labels, gen)
        inputs = post_tensor_transform(inputs, self.loop.transform, self.flip, self.fill, gen)
        logits = model(model_input(inputs))
        return F.cross_entropy(logits, targets), logits


def wanet_objective(spec, attack: Attack, images: torch.Tensor) -> WanetObjective:
    """The warp field drawn once from ``data_seed`` at the images' size, as the test trigger draws it."""
    loop = attack.training
    grid = warp_grid(loop.k, loop.s, loop.grid_rescale, images.shape[-1], spec.data_seed).to(images.device)
    return WanetObjective(attack, grid, spec.num_classes, is_cifar10(spec.dataset), spec.normalization_stats()[0])


def train_wanet(spec, attack: Attack, model, images, labels, checkpoint=None, progress: bool = True):
    objective = wanet_objective(spec, attack, images)
    return train_model(model, images, labels, spec.attacker_schedule(), checkpoint=checkpoint, progress=progress,
                       desc=attack.key, objective=objective), {}


LOOPS = {"wanet_bb": train_wanet, "inputaware_bb": train_inputaware}


def train_attacker(spec, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   checkpoint: str | Path | None = None, progress: bool = True) -> tuple[TrainResult, dict]:
    """Train ``model`` on the clean ``images`` with ``spec``'s training-controlled attack poisoning every batch;
    returns the loop's result and its extras for the stage's artifact (empty for WaNet)."""
    attack = spec.make_attack()
    if not attack.training_controlled:
        raise ValueError(f"{attack.key} is a data-poisoning attack: train its poisoned set with train_model")
    attack.check_size(images.shape)
    if attack.target >= spec.num_classes:
        raise ValueError(f"{attack.key}: target {attack.target} is not a class of {spec.dataset}")
    return LOOPS[attack.training.loop](spec, attack, model, images, labels, checkpoint, progress)


def unpoisoned_set(split: ImageSet, attack: Attack) -> PoisonedSet:
    """What a training-controlled attack's training starts from: the clean split, no sample marked poisoned."""
    attack.check_size(split.images.shape)
    none = torch.zeros(len(split), dtype=torch.bool, device=split.labels.device)
    return PoisonedSet(split.images, split.labels, split.labels.clone(), none, none.clone(), split.classes, attack.key,
                       "none: poisoned inside the attack's training loop")
