"""Cached stages that connect data, attacks and training; every defense builds on these.

* :func:`load_data` — the profile's train/test sets on the device;
* :func:`poisoned_training_set` — the defender's training split, poisoned (label-consistent PGD images cached:
  the ``lc_images`` stage; a trigger optimised on the clean model: :func:`optimised_attack`);
* :func:`run_data` — what a defense is granted: the poisoned set, the test set, the clean holdout (``run_data``);
* :func:`no_defense_model` — a clean or backdoored model trained once and reused by every defense (``no_defense``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .attack_training import train_attacker, unpoisoned_set
from .attacks import Attack, PoisonedSet, pgd_adversary
from .cache import ArtifactCache
from .data import ImageSet, class_balanced_subset, fingerprint, load_dataset
from .holdout import clean_subset, split_holdout
from .profiles import Profile
from .spec import RunSpec
from .stages import StageOutput, cached_stage
from .train import train_model


def load_data(profile: Profile, data_root=None, download: bool = False, device="cpu") -> tuple[ImageSet, ImageSet]:
    train = load_dataset(profile.dataset, "train", data_root, download, device)
    test = load_dataset(profile.dataset, "test", data_root, download, device)
    if profile.train_per_class:
        train = class_balanced_subset(train, profile.train_per_class)
    if profile.test_per_class:
        test = class_balanced_subset(test, profile.test_per_class)
    return train, test


def check_training_set(spec: RunSpec, train: ImageSet) -> None:
    """The loaded training set must be the one the spec was built from (fingerprint, device type), so that no
    artifact is stored under a key that describes other data."""
    if fingerprint(train) != spec.data_fingerprint:
        raise ValueError(f"the training set ({train.name}, {len(train)} images) is not the one this spec was built "
                         "from: build the spec from it (resolve(...), or spec.bound_to(train))")
    if train.images.device.type != spec.device_type:
        raise ValueError(f"the training set is on {train.images.device.type}, the spec says {spec.device_type}")


def defender_split(spec: RunSpec, train: ImageSet) -> tuple[ImageSet, ImageSet | None]:
    """``(the training set the attacker poisons and the defender trains on, the split-off holdout or None)``."""
    if spec.holdout is not None and spec.holdout.disjoint:
        return split_holdout(train, spec.holdout, spec.data_seed)
    return train, None


def poisoned_training_set(spec: RunSpec, train: ImageSet, cache: ArtifactCache | None = None,
                          progress: bool = True) -> PoisonedSet:
    """The defender's training split, poisoned; ``rate`` counts against the whole loaded ``train``."""
    check_training_set(spec, train)
    split, _ = defender_split(spec, train)
    attack = spec.make_attack()
    if attack.training_controlled:
        return unpoisoned_set(split, attack)
    if attack.trigger_from_clean_model:
        attack = optimised_attack(spec, train, cache or ArtifactCache(), progress)
    adversary = None
    if attack.needs_adversary:
        cache = cache or ArtifactCache()
        index = torch.as_tensor(attack.poison_indices(split, spec.data_seed, len(train)))

        def build_lc(_partial):
            model, _ = no_defense_model(spec.clean_model_for_poisoning(), train, cache, progress)
            perturb = pgd_adversary(model, seed=spec.data_seed, **attack.pgd)
            idx = index.to(split.labels.device)
            return {"index": index, "images": perturb(split.images[idx], split.labels[idx]).cpu()}

        stored = cache.get_or_build(spec.lc_stage(), build_lc)
        if not torch.equal(stored["index"], index):
            raise RuntimeError("cached label-consistent images do not match the poison selection")
        perturbed = stored["images"].to(split.images.device)

        def adversary(picked, labels):  # Attack.poison passes the selection in the same (sorted) order
            return perturbed

    return attack.poison(split, spec.data_seed, adversary=adversary, reference_size=len(train))


def optimised_attack(spec: RunSpec, train: ImageSet, cache: ArtifactCache, progress: bool = True) -> Attack:
    """``spec``'s attack with its trigger optimised on the clean model (``spec.trigger_stage()``: built once on
    :meth:`~backdoor_repro.spec.RunSpec.clean_model_for_poisoning`, then read from ``cache``)."""
    attack, stage = spec.make_attack(), spec.trigger_stage()  # a wrong architecture fails here, before any compute

    def build(_partial):
        model, _ = no_defense_model(spec.clean_model_for_poisoning(), train, cache, progress)
        return stage.config["search"].optimise(model, stage.config["image_size"], spec.data_seed)

    return replace(attack, trigger=attack.trigger_search.trigger(cache.get_or_build(stage, build)))


@dataclass(frozen=True)
class RunData:
    """What the defender's threat model grants: the poisoned training set (``poison_mask`` is for
    diagnostics only, never for a defense's decisions), the test set (for evaluation only) and, where the
    threat model grants one, a clean holdout. ``key`` ties it to the spec it was built from."""

    train: PoisonedSet
    test: ImageSet | None
    clean_holdout: ImageSet | None  # the images (RunSpec.holdout is the rule that drew them)
    holdout_disjoint: bool
    key: str

    def attacker_training_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` the No-Defense model trains on: the poisoned set plus a split-off holdout
        (T&R's baseline trains on all 50,000), or the poisoned set alone."""
        if self.clean_holdout is None or not self.holdout_disjoint:
            return self.train.images, self.train.labels
        return (torch.cat([self.train.images, self.clean_holdout.images]),
                torch.cat([self.train.labels, self.clean_holdout.labels.to(self.train.labels.device)]))


def data_key(spec: RunSpec) -> str:
    return spec.granted_stage().key


def check_run_data(spec: RunSpec, data: RunData) -> None:
    """``data`` must have been built from ``spec`` (by :func:`run_data`); every stage checks before any compute."""
    if data.key != data_key(spec):
        raise ValueError("the run data were built from another spec (build them with pipeline.run_data(spec, ...))")


def run_data(spec: RunSpec, train: ImageSet, test: ImageSet | None = None, cache: ArtifactCache | None = None,
             progress: bool = True) -> RunData:
    poisoned = poisoned_training_set(spec, train, cache, progress)
    _, holdout = defender_split(spec, train)
    if spec.holdout is not None and not spec.holdout.disjoint:
        holdout = clean_subset(train, spec.holdout, spec.data_seed)
    return RunData(poisoned, test, holdout, spec.holdout is None or spec.holdout.disjoint, data_key(spec))


def no_defense_model(spec: RunSpec, train: ImageSet | None, cache: ArtifactCache | None = None, progress: bool = True,
                     data: RunData | None = None):
    """Train (or load) the model ``spec`` describes on the loaded ``train`` (poisoned per ``spec``; clean
    when ``spec.attack`` is None), or on ``data`` when given. Returns ``(model, StageRecord)``; the record's
    extras hold the poison count and the training throughput. Evaluate it with
    :func:`backdoor_repro.evaluation.evaluate`."""
    if train is None and (data is None or spec.attack is None):
        raise ValueError("no_defense_model needs the loaded training set, or the run data of an attacked spec")
    if data is not None:
        check_run_data(spec, data)
    else:
        check_training_set(spec, train)
    cache = cache or ArtifactCache()
    device = (data.train if data is not None else train).images.device

    def build(partial):
        if spec.attack is not None:
            granted = data or run_data(spec, train, None, cache, progress)
            (images, labels), count = granted.attacker_training_set(), granted.train.count
        else:
            images, labels, count = train.images, train.labels, 0
        torch.manual_seed(spec.seed)
        model = spec.new_model()
        extras = {}
        if spec.training_controlled:  # the loop's extras (Input-aware's generators) join the artifact
            result, extras = train_attacker(spec, model, images, labels, partial, progress)
        else:
            result = train_model(model, images, labels, spec.no_defense_schedule, checkpoint=partial, progress=progress,
                                      desc=spec.attack or "clean")
        return StageOutput(model, result.history, {"poison_count": count, "images_per_second": result.images_per_second,
                                                   **extras})

    return cached_stage(cache, spec.no_defense_stage(), build, spec.new_model, device)
