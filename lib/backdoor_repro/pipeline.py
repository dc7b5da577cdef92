"""Cached stages that connect data, attacks and training; every notebook builds on these.

* :func:`load_data` — the profile's train/test sets on the device;
* :func:`make_attack` — a registry attack with the profile's overrides;
* :func:`poisoned_training_set` — poisoning (label-consistent PGD images cached);
* :func:`supervised_model` — a clean or backdoored model trained once and reused by every defense.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from .attacks import Attack, PoisonedSet, get_attack, pgd_adversary
from .cache import ArtifactCache
from .data import ImageSet, class_balanced_subset, load_dataset
from .evaluation import AttackEvaluator
from .metrics import accuracy
from .models import build_model
from .profiles import Profile
from .train import TrainConfig, predict, train_supervised

SUPERVISED_VERSION = 1
LC_IMAGES_VERSION = 2  # 2: PGD iterates clamped to [0, 1] at every step


def load_data(profile: Profile, data_root=None, download: bool = False, device="cpu") -> tuple[ImageSet, ImageSet]:
    train = load_dataset(profile.dataset, "train", data_root, download, device)
    test = load_dataset(profile.dataset, "test", data_root, download, device)
    if profile.train_per_class:
        train = class_balanced_subset(train, profile.train_per_class)
    if profile.test_per_class:
        test = class_balanced_subset(test, profile.test_per_class)
    return train, test


def data_fingerprint(data: ImageSet) -> str:
    """A short hash of the labels and a spread sample of the images: tells apart two copies of "the same"
    dataset whose pixels or order differ (JPEG archive vs torchvision files), so artifacts never mix."""
    h = hashlib.sha256(data.labels.cpu().numpy().tobytes())
    step = max(1, len(data) // 64)
    h.update(data.images[::step].cpu().numpy().tobytes())
    h.update(repr((len(data), tuple(data.images.shape[1:]))).encode())
    return h.hexdigest()[:16]


def attack_overrides(profile: Profile, key: str, **extra) -> dict:
    """The profile's overrides for ``key`` (its rate applies to dirty-label attacks only)."""
    overrides = dict(profile.attack_overrides)
    if get_attack(key).label_mode == "clean_label":
        overrides.pop("rate", None)
    overrides.update(extra)
    return overrides


def make_attack(profile: Profile, key: str, data_seed: int, **extra) -> Attack:
    return get_attack(key, data_seed=data_seed, **attack_overrides(profile, key, **extra))


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides a supervised model; its hash is the artifact key."""

    dataset: str
    train_per_class: int | None
    model: str
    width: int
    num_classes: int
    attack: str | None  # None: clean model
    attack_overrides: dict = field(default_factory=dict)
    data_seed: int = 0
    train: TrainConfig = TrainConfig()
    data_fingerprint: str = ""  # data_fingerprint() of the training set actually loaded
    device_type: str = "cpu"  # cuda runs train in bf16: their artifacts are kept apart from CPU ones

    @classmethod
    def for_profile(cls, profile: Profile, train: ImageSet, attack: str | None, data_seed: int, seed: int,
                    **attack_extra) -> "ModelSpec":
        overrides = attack_overrides(profile, attack, **attack_extra) if attack else {}
        return cls(profile.dataset, profile.train_per_class, profile.model, profile.width, train.num_classes, attack,
                   overrides, data_seed, profile.supervised.with_(seed=seed), data_fingerprint(train),
                   train.images.device.type)

    def clean_model_for_poisoning(self) -> "ModelSpec":
        """The clean model a label-consistent attack perturbs against: trained with the No-Defense schedule
        but seeded by ``data_seed``, so the poisoned set depends on ``data_seed`` only."""
        return replace(self, attack=None, attack_overrides={}, train=self.train.with_(seed=self.data_seed))


def poisoned_training_set(spec: ModelSpec, train: ImageSet, cache: ArtifactCache | None = None,
                          progress: bool = True) -> PoisonedSet:
    attack = get_attack(spec.attack, data_seed=spec.data_seed, **spec.attack_overrides)
    adversary = None
    if attack.needs_adversary:
        cache = cache or ArtifactCache()
        clean = spec.clean_model_for_poisoning()
        lc_key = {"clean_model": asdict(clean), "pgd": attack.pgd, "attack": spec.attack,
                  "overrides": spec.attack_overrides}

        def build_lc(_partial):
            model, _ = supervised_model(clean, train, None, cache, progress)
            idx = torch.as_tensor(attack.poison_indices(train.labels, spec.data_seed), device=train.labels.device)
            perturb = pgd_adversary(model, seed=spec.data_seed, **attack.pgd)
            return {"index": idx.cpu(), "images": perturb(train.images[idx], train.labels[idx]).cpu()}

        stored = cache.get_or_build("lc_images", lc_key, LC_IMAGES_VERSION, build_lc)
        expected = torch.as_tensor(attack.poison_indices(train.labels, spec.data_seed))
        if not torch.equal(stored["index"], expected):
            raise RuntimeError("cached label-consistent images do not match the poison selection")
        perturbed = stored["images"].to(train.images.device)

        def adversary(picked, labels):  # Attack.poison passes the selection in the same (sorted) order
            return perturbed

    return attack.poison(train, spec.data_seed, adversary=adversary)


def supervised_model(spec: ModelSpec, train: ImageSet, test: ImageSet | None = None,
                     cache: ArtifactCache | None = None, progress: bool = True, device=None):
    """Train (or load) the model ``spec`` describes. Returns ``(model, record)``; ``record`` holds the
    training history, wall time, poison count and (if ``test`` is given) last-epoch metrics."""
    cache = cache or ArtifactCache()
    device = device or train.images.device
    attack = get_attack(spec.attack, data_seed=spec.data_seed, **spec.attack_overrides) if spec.attack else None

    def build(partial):
        torch.manual_seed(spec.train.seed)
        model = build_model(spec.model, spec.num_classes, spec.width)
        if attack is not None:
            poisoned = poisoned_training_set(spec, train, cache, progress)
            images, labels, count = poisoned.images, poisoned.labels, poisoned.count
        else:
            images, labels, count = train.images, train.labels, 0
        evaluate = AttackEvaluator(attack, test) if (attack is not None and test is not None) else None
        started = time.perf_counter()
        result = train_supervised(model, images, labels, spec.train, evaluate=evaluate, checkpoint=partial,
                                  progress=progress, desc=spec.attack or "clean")
        return {"model": model.state_dict(), "history": result.history, "poison_count": count,
                "seconds": time.perf_counter() - started, "images_per_second": result.images_per_second}

    stored = cache.get_or_build("supervised", spec, SUPERVISED_VERSION, build)
    model = build_model(spec.model, spec.num_classes, spec.width)
    model.load_state_dict(stored["model"])
    model = model.to(device).eval()
    record = {k: v for k, v in stored.items() if k != "model"}
    if test is not None:
        record["metrics"] = (AttackEvaluator(attack, test)(model) if attack is not None
                             else {"ACC": accuracy(predict(model, test.images), test.labels.to(device))})
    return model, record
