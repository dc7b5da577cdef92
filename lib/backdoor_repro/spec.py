"""What decides a run: :class:`RunSpec` (data, attack, model, seeds, No-Defense schedule, holdout).

One spec owns the attack, the data key and both seeds, so every stage of every defense is keyed from
the same place: :meth:`RunSpec.poisoning_key` (what decides the poisoned training set) and
:meth:`RunSpec.training_key` (that plus the model and the training seed).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace

import torch

from .attacks import POISONING_VERSION, Attack, canonical_overrides, get_attack
from .data import ImageSet, fingerprint
from .datasets import CIFAR10_MEAN, CIFAR10_STD_DBD
from .models import NORMALIZATIONS, build_model, normalization_stats
from .numerics import cpu_numerics
from .train import TrainConfig, cpu_autocast, gpu_bf16

HOLDOUT_RULES = {
    "last": "the last `fraction` of the training indices, split off before poisoning (T&R on CIFAR); "
            "on data not in torchvision's order it falls back to 'shuffled'",
    "shuffled": "the set is permuted (seeded by data_seed), then the last `fraction` split off before poisoning; "
                "the rest stays in permuted order (T&R on GTSRB, which shuffles unseeded)",
    "clean_subset": "a class-balanced random draw (seeded by data_seed) from the clean training set: clean originals "
                    "with their true labels, which stay in the training set the backdoored model saw (FMP)",
}


@dataclass(frozen=True)
class Holdout:
    """The clean data a defense's threat model grants the defender."""

    fraction: float
    rule: str = "last"

    def __post_init__(self):
        if not isinstance(self.fraction, (int, float)) or not 0 < self.fraction < 1:
            raise ValueError(f"holdout fraction must be in (0, 1), got {self.fraction!r}")
        if self.rule not in HOLDOUT_RULES:
            raise ValueError(f"unknown holdout rule {self.rule!r}; choose from {', '.join(HOLDOUT_RULES)}")

    @property
    def disjoint(self) -> bool:
        """True if the holdout is split off before poisoning (the defender's training set excludes it)."""
        return self.rule != "clean_subset"


def run_numerics(device_type: str) -> str:
    """What decides a run's numerics beyond its configs: on the CPU its kernels and threads (plus "-bf16" under the
    dry run's autocast), on CUDA the precision ("cuda-bf16", or "cuda-fp32" where the profile turns bf16 off: the
    paper profile), so that artifacts of two precisions are never mixed."""
    if device_type == "cpu":
        return cpu_numerics() + ("-bf16" if cpu_autocast() else "")
    return f"{device_type}-{'bf16' if gpu_bf16() else 'fp32'}"


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a run's data and models. ``seed`` is the one training seed: it is copied
    into ``supervised`` (the No-Defense schedule), whatever seed that config carried."""

    dataset: str
    train_per_class: int | None
    model: str
    width: int
    num_classes: int
    attack: str | None  # None: a clean model
    attack_overrides: dict = field(default_factory=dict)
    data_seed: int = 0
    seed: int = 0
    supervised: TrainConfig = TrainConfig()
    holdout: Holdout | None = None
    data_fingerprint: str = ""  # data.fingerprint() of the training set actually loaded
    device_type: str = "cpu"  # CUDA and CPU artifacts are kept apart
    normalization: str = "dbd"  # the models' first layer (models.NORMALIZATIONS); FMP's protocol: "backdoorbench"
    numerics: str = ""  # run_numerics: CPU kernel family and threads (+"-bf16" in a dry run); CUDA: "cuda-bf16" / "cuda-fp32"

    def __post_init__(self):
        for name in ("data_seed", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.supervised.seed != self.seed:
            object.__setattr__(self, "supervised", self.supervised.with_(seed=self.seed))
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; choose from {', '.join(NORMALIZATIONS)}")
        if self.attack is not None:  # unknown attacks and parameters are errors here, before any compute
            object.__setattr__(self, "attack_overrides", canonical_overrides(self.attack, dict(self.attack_overrides)))
        elif self.attack_overrides:
            raise ValueError("attack_overrides given for a spec without an attack")

    @classmethod
    def for_profile(cls, profile, train: ImageSet, attack: str | None, data_seed: int = 0, seed: int = 0,
                    holdout: Holdout | None = None, **attack_extra) -> "RunSpec":
        from .pipeline import attack_overrides

        overrides = attack_overrides(profile, attack, **attack_extra) if attack else {}
        device_type = train.images.device.type
        return cls(profile.dataset, profile.train_per_class, profile.model, profile.width, train.num_classes, attack,
                   overrides, data_seed, seed, profile.supervised, holdout, fingerprint(train), device_type,
                   numerics=run_numerics(device_type))

    def with_(self, **changes) -> "RunSpec":
        return replace(self, **changes)

    def bound_to(self, train: ImageSet) -> "RunSpec":
        """This spec with the fingerprint and device type of the loaded ``train`` (what ``for_profile`` records)."""
        device_type = train.images.device.type
        return replace(self, data_fingerprint=fingerprint(train), device_type=device_type,
                       numerics=run_numerics(device_type))

    def with_attack(self, attack: str | None, **overrides) -> "RunSpec":
        return replace(self, attack=attack, attack_overrides=overrides if attack else {})

    def new_model(self) -> torch.nn.Module:
        """A freshly initialised network of this spec (architecture, width, classes, normalisation)."""
        mean, std = normalization_stats(self.normalization, self.dataset)
        return build_model(self.model, self.num_classes, self.width, mean, std)

    def make_attack(self) -> Attack:
        if self.attack is None:
            raise ValueError("this spec describes a clean model: it has no attack")
        return get_attack(self.attack, data_seed=self.data_seed, **self.attack_overrides)

    @property
    def train_config(self) -> TrainConfig:
        """The No-Defense schedule, seeded with ``seed``."""
        return self.supervised

    def clean_model_for_poisoning(self) -> "RunSpec":
        """The clean model a label-consistent attack perturbs against: the No-Defense schedule seeded by
        ``data_seed``, so the poisoned set depends on ``data_seed`` only."""
        return replace(self, attack=None, attack_overrides={}, seed=self.data_seed, holdout=None)

    def poisoning_key(self) -> dict:
        """What decides the poisoned training set (and the holdout): no training seed, no model, except
        for attacks that perturb images with a clean model first, whose model and schedule count."""
        key = {"dataset": self.dataset, "train_per_class": self.train_per_class, "data_fingerprint": self.data_fingerprint,
               "device_type": self.device_type, "attack": self.attack, "attack_overrides": self.attack_overrides,
               "data_seed": self.data_seed, "holdout": self.holdout, "poisoning_version": POISONING_VERSION}
        if self.attack is not None and self.make_attack().needs_adversary:
            clean = self.clean_model_for_poisoning()
            key["poisoning_clean_model"] = {"model": clean.model, "width": clean.width, "train": clean.supervised,
                                            **clean.normalization_key()}
            if self.numerics:
                key["poisoning_clean_model"]["numerics"] = self.numerics
        return key

    def training_key(self) -> dict:
        """:meth:`poisoning_key` plus the architecture and the training seed: the key of every defense
        stage that trains on the poisoned data (each stage adds its own config)."""
        key = {**self.poisoning_key(), "model": self.model, "width": self.width, "num_classes": self.num_classes,
               "seed": self.seed}
        key.update(self.normalization_key())
        if self.numerics:
            key["numerics"] = self.numerics
        return key

    def normalization_key(self) -> dict:
        """The models' normalisation, where it is not the one every key was made under before the field existed
        (the "dbd" scheme with DBD's CIFAR-10 values): the scheme if another, and the statistics themselves where
        "dbd" now means another dataset's own (CIFAR-100, GTSRB), so models normalised the old way are not reused."""
        key = {}
        if self.normalization != "dbd":
            key["normalization"] = self.normalization
        else:
            stats = normalization_stats(self.normalization, self.dataset)
            if stats != (CIFAR10_MEAN, CIFAR10_STD_DBD):
                key["normalization_stats"] = stats
        return key

    def attacker_key(self) -> dict:
        """What decides the No-Defense (attacker's) model: the whole spec, except a holdout that is not split off
        (FMP's clean subset does not change what the attacker trained on) and, for a clean model, the data seed."""
        key = dataclasses.asdict(self)
        del key["normalization"]
        key.update(self.normalization_key())
        if not self.numerics:
            del key["numerics"]
        if self.holdout is not None and not self.holdout.disjoint:
            key["holdout"] = None
        if self.attack is None:
            key["data_seed"] = None
        key["poisoning_version"] = POISONING_VERSION
        return key

    def describe(self) -> dict:
        return dataclasses.asdict(self)
