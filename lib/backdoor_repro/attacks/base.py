"""The attack object: a trigger plus the poisoning semantics of one paper's code."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch

from ..data import ImageSet
from .selection import CLEAN_LABEL_SELECTIONS, DETERMINISTIC, OFFICIAL_STREAMS, RATE_OF, SELECTIONS, select_poison
from .sizes import attack_sizes, size_error

LABEL_MODES = ("all2one", "all2all", "clean_label")
INDEX_CHOICES = ("ours", "official")
OFFICIAL_DATASETS = ("cifar10", "cifar100")  # the official streams index these sets in torchvision's order


class Trigger(Protocol):
    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        """uint8 ``(N, 3, H, W)`` in, uint8 out; ``train=False`` gives the test-time variant. The sizes a
        trigger is defined at come from its pattern or its ``sizes`` (``sizes.trigger_sizes``)."""



class PlaceholderTrigger:
    """What ``get_attack`` holds for a trigger that exists only once a model is trained (learned by the attack's own
    loop, or optimised on the clean model): it refuses to apply, saying where the real one comes from."""

    def __init__(self, key: str, why: str):
        self.key, self.why = key, why

    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        raise ValueError(f"{self.key}'s trigger {self.why}")

@dataclass
class PoisonedSet:
    """A training set after poisoning. ``labels`` are what training sees; ``true_labels`` the clean ones.

    ``cross_mask`` marks samples that were modified but keep their true label (WaNet noise mode).
    ``index_stream`` says which random stream chose the poisoned indices (``ours`` or an official one), or names
    the fixed rule that takes the data's order instead (``first_n_nontarget (fixed rule on the data's order)``; on
    a holdout split shuffled first, see ``holdout.py``, that order is itself a seeded permutation, with a note).
    """

    images: torch.Tensor
    labels: torch.Tensor
    true_labels: torch.Tensor
    poison_mask: torch.Tensor
    cross_mask: torch.Tensor
    classes: tuple[str, ...]
    attack: str
    index_stream: str = "ours"

    @property
    def count(self) -> int:
        return int(self.poison_mask.sum())

    def __len__(self) -> int:
        return self.images.shape[0]

    def as_imageset(self) -> ImageSet:
        return ImageSet(self.images, self.labels, self.classes, f"{self.attack}-poisoned")


Adversary = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Attack:
    key: str
    trigger: Trigger = field(repr=False)
    target: int = 0
    label_mode: str = "all2one"
    selection: str = "random_nontarget"
    rate: float = 0.1
    pgd: dict | None = field(default=None, compare=False)  # label-consistent: eps, step, steps of the PGD pre-step
    cross_ratio: float = 0.0  # WaNet noise mode: this many times the poison count, true labels
    cross_trigger: Trigger | None = field(default=None, repr=False)
    indices: str = "ours"  # "official": the official code's random stream (see selection.py), where it has one
    official_stream: str | None = None  # which paper's code this attack's indices come from
    source: str = ""
    training: object = None  # training-controlled: its loop's config (attack_training.py); None: data poisoning
    trigger_search: object = None  # a trigger optimised on the clean model: its search (trojannn.TrojanSearch)

    def __post_init__(self):
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not (0 < self.rate <= 1):
            raise ValueError(f"{self.key}: rate must be a number in (0, 1], got {self.rate!r}")
        if isinstance(self.target, bool) or not isinstance(self.target, (int, np.integer)):
            raise ValueError(f"{self.key}: target must be an integer class index, got {self.target!r}")
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"{self.key}: label_mode must be one of {LABEL_MODES}, got {self.label_mode!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"{self.key}: unknown selection {self.selection!r}; choose from {', '.join(SELECTIONS)}")
        if (self.label_mode == "clean_label") != (self.selection in CLEAN_LABEL_SELECTIONS):
            raise ValueError(f"{self.key}: clean_label attacks (and only they) use a target-class selection "
                             f"({', '.join(CLEAN_LABEL_SELECTIONS)})")
        if self.target < 0:
            raise ValueError(f"{self.key}: target must be a class index, got {self.target}")
        if self.indices not in INDEX_CHOICES:
            raise ValueError(f"{self.key}: indices must be one of {INDEX_CHOICES}, got {self.indices!r}")

    @property
    def needs_adversary(self) -> bool:
        return self.pgd is not None

    @property
    def training_controlled(self) -> bool:
        """True where the attack poisons inside its own training loop (no fixed poisoned set, no fixed indices)."""
        return self.training is not None

    @property
    def trigger_from_clean_model(self) -> bool:
        """True where the trigger is optimised on the clean model (``spec.trigger_stage()``): until the pipeline binds
        it (``dataclasses.replace(attack, trigger=...)``), the registry's trigger refuses to apply."""
        return self.trigger_search is not None

    def _refuse_fixed_poisoning(self) -> None:
        if self.training_controlled:
            raise ValueError(f"{self.key} poisons inside its own training loop: it has no fixed poisoned set or "
                             "indices (pipeline.no_defense_model trains it)")

    @property
    def sizes(self) -> tuple[int, ...] | None:
        """The square image sizes (side lengths) this attack is defined at; ``None``: any."""
        return attack_sizes(self)

    def check_size(self, image_size) -> None:
        """``ValueError`` naming this attack, the size and the sizes it supports, unless it is defined at
        ``image_size`` (an int side, ``(H, W)`` or a batch shape)."""
        message = size_error(self, image_size)
        if message:
            raise ValueError(message)

    @property
    def rate_of(self) -> str:
        """What ``rate`` is a fraction of for this attack's selection rule."""
        return RATE_OF[self.selection]

    def index_stream(self, data: ImageSet | None = None) -> str:
        """The stream that picks the poisoned indices on ``data``: the official one when asked for, the attack
        has one for its rule, and ``data`` is in the official (torchvision) order; otherwise ours, with a warning."""
        if self.indices != "official" or self.selection in DETERMINISTIC:
            return "ours"
        stream = self.official_stream
        if stream is None or self.selection not in OFFICIAL_STREAMS[stream][1]:
            warnings.warn(f"{self.key}: no official index stream for selection {self.selection!r} "
                          f"(official code: {stream or 'none'}); using ours", stacklevel=3)
            return "ours"
        if data is not None and (data.order != "torchvision" or data.name not in OFFICIAL_DATASETS):
            warnings.warn(f"{self.key}: official indices exist for CIFAR-10/100 in torchvision's order; {data.name} "
                          f"is in {data.order!r} order, so our own stream picks the indices", stacklevel=3)
            return "ours"
        return stream

    def poison_indices(self, data: ImageSet, data_seed: int, reference_size: int | None = None) -> np.ndarray:
        """Sorted indices of the samples of ``data`` this attack poisons (``reference_size``: the size of the
        whole training set when ``data`` is a split of it)."""
        self._refuse_fixed_poisoning()
        return self._select(data, data_seed, reference_size)[1]

    def _select(self, data: ImageSet, data_seed: int, reference_size: int | None):
        stream = self.index_stream(data)
        return stream, select_poison(data.labels.cpu().numpy(), self.target, self.selection, self.rate, data_seed,
                                     stream, reference_size)

    def poisoned_labels(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        if self.label_mode == "all2one":
            return torch.full_like(labels, self.target)
        if self.label_mode == "all2all":
            return (labels + 1) % num_classes
        return labels.clone()

    def poison(self, data: ImageSet, data_seed: int, adversary: Adversary | None = None,
               reference_size: int | None = None) -> PoisonedSet:
        """Poison ``data`` (trigger applied once to the stored uint8 images, before any augmentation).
        ``reference_size``: the size of the whole training set when ``data`` is a split of it."""
        self._refuse_fixed_poisoning()
        self.check_size(data.images.shape)
        if self.target >= data.num_classes:
            raise ValueError(f"{self.key}: target {self.target} is not a class of {data.name}")
        if self.needs_adversary and adversary is None:
            raise ValueError(f"{self.key} perturbs images with a clean model first: pass adversary= "
                             "(pipeline.poisoned_training_set builds and caches one)")
        stream, idx = self._select(data, data_seed, reference_size)
        idx = torch.as_tensor(idx, device=data.labels.device)
        if len(idx) == 0:
            raise ValueError(f"{self.key}: rate {self.rate} selects no sample of {len(data)}")
        images, labels = data.images.clone(), data.labels.clone()
        picked = images[idx]
        if self.needs_adversary:
            picked = adversary(picked, data.labels[idx])
        images[idx] = self.trigger.apply(picked, train=True)
        labels[idx] = self.poisoned_labels(data.labels[idx], data.num_classes)
        poison_mask = torch.zeros(len(data), dtype=torch.bool, device=data.labels.device)
        poison_mask[idx] = True
        cross_mask = torch.zeros_like(poison_mask)
        if self.cross_ratio > 0:
            rng = np.random.default_rng([data_seed, 1])
            free = np.flatnonzero(~poison_mask.cpu().numpy())
            cross = torch.as_tensor(np.sort(rng.permutation(free)[: int(self.cross_ratio * len(idx))]),
                                    device=data.labels.device)
            images[cross] = self.cross_trigger.apply(images[cross], train=True)
            cross_mask[cross] = True
        # a fixed rule (T&R's first N) draws from no stream: it takes the data's order
        source = f"{self.selection} (fixed rule on the data's order)" if self.selection in DETERMINISTIC else stream
        return PoisonedSet(images, labels, data.labels.clone(), poison_mask, cross_mask, data.classes, self.key, source)

    def test_population(self, test: ImageSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(triggered images, attack labels, true labels)`` of the ASR population: non-target test
        images (all2one, clean-label) or every test image with label (y + 1) mod K (all2all)."""
        self.check_size(test.images.shape)
        keep = torch.ones_like(test.labels, dtype=torch.bool) if self.label_mode == "all2all" else test.labels != self.target
        true = test.labels[keep]
        attacked = (true + 1) % test.num_classes if self.label_mode == "all2all" else torch.full_like(true, self.target)
        return self.trigger.apply(test.images[keep], train=False), attacked, true


def assemble(key: str, trigger, common: dict, **defaults) -> Attack:
    """An :class:`Attack` of a registry factory: the paper's ``defaults``, then the caller's ``common`` overrides."""
    return Attack(key=key, trigger=trigger, **{**defaults, **common})
