"""What decides a run: :class:`RunSpec` (data, attack, model, seeds, No-Defense schedule, holdout, precision) and the
root stages of the stage graph that every defense builds on (:mod:`backdoor_repro.graph`).

A spec is made by :func:`backdoor_repro.resolve.resolve`, the one place that decides a run's rate, schedule,
protocol and precision. Its root stages::

    lc_images ──────────┬──► poisoned_data ──► run_data (+ the holdout a defense is granted: for its readers)
    (clean no_defense)  │          │
    trojannn_trigger ───┘          ├──► no_defense (+ model_context: architecture, seed, precision, numerics)
    (clean no_defense)             │
    model_context ─────────────────┘

Every key is derived from the stages' configs and their parents' keys; none is written by hand.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace

import torch

from .attacks import POISONING_VERSION, Attack, canonical_overrides, get_attack
from .attacks.selection import DETERMINISTIC
from .data import ImageSet, fingerprint
from .datasets import dataset_info
from .graph import Stage
from .models import NORMALIZATIONS, build_model, normalization_stats
from .fast_step import enable_gpu_step_paths
from .numerics import cpu_numerics
from .train import TrainConfig, enable_cpu_autocast, set_gpu_bf16

NO_DEFENSE_VERSION = 4  # the code versions of the root stages (graph.Stage): bump one when its stage changes
LC_IMAGES_VERSION = 5
ATTACK_TRAINING_VERSION = 1  # the attacker's own training loop (attack_training.py)
PRECISIONS = ("fp32", "bf16")
SMALL_RUNS = ("dry_run", "plumbing")  # profiles.SMALL_RUN_SETTINGS: every stage cut to a couple of steps

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


def machine_numerics(device_type: str) -> str:
    """What the machine adds to a run's numerics: on the CPU its kernel family and threads (numerics.py); on CUDA
    nothing beyond the device type (the precision is the spec's own field)."""
    return cpu_numerics() if device_type == "cpu" else device_type


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a run's data and models. ``seed`` is the one training seed: it is copied into the
    No-Defense schedule, whatever seed that config carried. ``precision`` is the autocast of every stage ("bf16" or
    "fp32"), ``numerics`` the machine's kernels (:func:`machine_numerics`), ``small_run`` a run cut to a couple of
    steps per stage ("dry_run", "plumbing") or None."""

    dataset: str
    train_per_class: int | None
    model: str
    width: int
    num_classes: int
    attack: str | None  # None: a clean model
    attack_overrides: dict = field(default_factory=dict)
    data_seed: int = 0
    seed: int = 0
    no_defense_schedule: TrainConfig = TrainConfig()
    holdout: Holdout | None = None
    data_fingerprint: str = ""  # data.fingerprint() of the training set actually loaded
    device_type: str = "cpu"  # CUDA and CPU artifacts are kept apart
    normalization: str = "dbd"  # the models' first layer (models.NORMALIZATIONS); FMP's protocol: "backdoorbench"
    numerics: str = ""
    precision: str = "fp32"
    small_run: str | None = None

    def __post_init__(self):
        for name in ("data_seed", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.no_defense_schedule.seed != self.seed:
            object.__setattr__(self, "no_defense_schedule", self.no_defense_schedule.with_(seed=self.seed))
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; choose from {', '.join(NORMALIZATIONS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.small_run is not None and self.small_run not in SMALL_RUNS:
            raise ValueError(f"small_run must be None or one of {SMALL_RUNS}, got {self.small_run!r}")
        if self.attack is not None:  # unknown attacks and parameters are errors here, before any compute
            object.__setattr__(self, "attack_overrides", canonical_overrides(self.attack, dict(self.attack_overrides)))
        elif self.attack_overrides:
            raise ValueError("attack_overrides given for a spec without an attack")

    def with_(self, **changes) -> "RunSpec":
        return replace(self, **changes)

    def apply_numerics(self) -> None:
        """Set this process's autocast and step paths from the spec: every defense run and every evaluation calls
        this first, so the process state follows the spec (and no key ever reads the process state)."""
        set_gpu_bf16(self.precision == "bf16")
        enable_cpu_autocast(self.device_type == "cpu" and self.precision == "bf16")
        enable_gpu_step_paths(self.small_run == "dry_run")  # a dry run takes the GPU's step paths on the CPU too

    def bound_to(self, train: ImageSet) -> "RunSpec":
        """This spec with the fingerprint, device type and machine numerics of the loaded ``train``."""
        device_type = train.images.device.type
        return replace(self, data_fingerprint=fingerprint(train), device_type=device_type,
                       numerics=machine_numerics(device_type))

    def with_attack(self, attack: str | None, **overrides) -> "RunSpec":
        return replace(self, attack=attack, attack_overrides=overrides if attack else {})

    def new_model(self) -> torch.nn.Module:
        """A freshly initialised network of this spec (architecture, width, classes, normalisation)."""
        return build_model(self.model, self.num_classes, self.width, *self.normalization_stats())

    def normalization_stats(self) -> tuple[tuple, tuple]:
        return normalization_stats(self.normalization, self.dataset)

    def make_attack(self) -> Attack:
        if self.attack is None:
            raise ValueError("this spec describes a clean model: it has no attack")
        return get_attack(self.attack, data_seed=self.data_seed, **self.attack_overrides)

    def clean_model_for_poisoning(self) -> "RunSpec":
        """The clean model a label-consistent attack perturbs against: the No-Defense schedule seeded by
        ``data_seed``, so the poisoned set depends on ``data_seed`` only."""
        return replace(self, attack=None, attack_overrides={}, seed=self.data_seed, holdout=None)

    # ------------------------------------------------------------------------------------- the root stages
    def poisoning_config(self) -> dict:
        """What decides the poisoned training set: the data, the attack, the data seed and a holdout split off
        before poisoning; for a clean model no data seed."""
        split = self.holdout if self.holdout is not None and self.holdout.disjoint else None
        config = {"dataset": self.dataset, "train_per_class": self.train_per_class,
                  "data_fingerprint": self.data_fingerprint, "device_type": self.device_type, "attack": self.attack,
                  "attack_overrides": self.attack_overrides, "split": split,
                  "data_seed": self.data_seed if self.attack is not None else None}
        if self.attack is not None and self.make_attack().selection in DETERMINISTIC:
            config["fixed_rule_order"] = "shuffled where class-ordered"  # attacks/selection.fixed_rule_order
        return config

    def lc_stage(self) -> Stage:
        """The label-consistent attack's perturbed images, made with PGD on the clean model."""
        parents = (self.clean_model_for_poisoning().no_defense_stage(),)
        return Stage("lc_images", {"poisoning": self.poisoning_config(), "pgd": self.make_attack().pgd},
                     LC_IMAGES_VERSION, parents)

    def trigger_stage(self) -> Stage:
        """A trigger optimised on the clean model (TrojanNN): keyed by the search this run makes (a small run's is
        cut), the image size and the data seed (which seeds the search's own draws), on the clean model's No-Defense
        stage."""
        attack = self.make_attack()
        if attack.trigger_search is None:
            raise ValueError(f"{attack.key}'s trigger does not depend on a model: it has no trigger stage")
        attack.trigger_search.check_model(self.model, self.width)
        search = attack.trigger_search.for_run(self.small_run is not None)
        config = {"search": search, "image_size": dataset_info(self.dataset).image_size, "data_seed": self.data_seed}
        return Stage(search.stage, config, search.version, (self.clean_model_for_poisoning().no_defense_stage(),))

    def data_stage(self) -> Stage:
        """The poisoned training set (computed, not stored; the label-consistent images and the optimised trigger it
        uses are)."""
        attack = self.make_attack() if self.attack is not None else None
        parents = ()
        if attack is not None and attack.needs_adversary:
            parents += (self.lc_stage(),)
        if attack is not None and attack.trigger_from_clean_model:
            parents += (self.trigger_stage(),)
        return Stage("poisoned_data", self.poisoning_config(), POISONING_VERSION, parents)

    def granted_stage(self) -> Stage:
        """What the defender is granted (:class:`~backdoor_repro.pipeline.RunData`): the poisoned set and the holdout."""
        return Stage("run_data", {"holdout": self.holdout}, 1, (self.data_stage(),))

    def context_stage(self) -> Stage:
        """What every trained stage shares: the architecture, the training seed, the precision and the machine."""
        mean, std = self.normalization_stats()
        return Stage("model_context", {"model": self.model, "width": self.width, "num_classes": self.num_classes,
                                       "normalization": self.normalization, "mean": mean, "std": std,
                                       "seed": self.seed, "precision": self.precision, "numerics": self.numerics,
                                       "small_run": self.small_run}, 1)

    @property
    def training_controlled(self) -> bool:
        """True where the attack poisons inside its own training loop (``attack_training.py``)."""
        return self.attack is not None and self.make_attack().training_controlled

    def attacker_schedule(self) -> TrainConfig:
        """What the attacker's model trains with: the No-Defense schedule, as a training-controlled attack sets it."""
        if not self.training_controlled:
            return self.no_defense_schedule
        return self.make_attack().training.schedule(self.no_defense_schedule)

    def no_defense_stage(self) -> Stage:
        """The attacker's model: the poisoned set (plus a split-off holdout) under the No-Defense schedule; for a
        training-controlled attack, its own loop on the clean set (keyed by the loop's full config)."""
        if self.training_controlled:
            attack = self.make_attack()
            config = {"schedule": self.attacker_schedule(), "loop": attack.training, "target": attack.target,
                      "rate": attack.rate, "label_mode": attack.label_mode}
            return Stage("attack_training", config, ATTACK_TRAINING_VERSION, (self.data_stage(), self.context_stage()))
        return Stage("no_defense", {"schedule": self.no_defense_schedule}, NO_DEFENSE_VERSION,
                     (self.data_stage(), self.context_stage()))

    def training_parents(self) -> tuple[Stage, Stage]:
        """The parents of a stage that trains on the poisoned training set alone: ``(poisoned_data, model_context)``.
        A stage that also reads the clean holdout names ``granted_stage()`` as a parent too, so a holdout that does
        not change the training set (FMP's clean subset, the grid's common one) rebuilds only the stages that read it."""
        return self.data_stage(), self.context_stage()

    def describe(self) -> dict:
        return dataclasses.asdict(self)
