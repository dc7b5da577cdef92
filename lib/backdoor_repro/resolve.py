"""The one place that decides a run: :func:`resolve` turns (profile, training set, attack, defense, protocol, small
run, seeds) into the frozen :class:`~backdoor_repro.spec.RunSpec`. Notebooks (``Experiment.spec``), the grid,
seed_spread and the tests call it; nothing else decides a poisoning rate, a No-Defense schedule, a holdout, a
protocol or a precision.

In order: the profile's attack settings (its rate applies to dirty-label attacks only); the protocol's (``common``:
one rate, target and holdout for every cell; ``own``: the defense's paper's attack settings, holdout and spec
changes such as T&R's WRN-16 and its schedule); the caller's explicit overrides; then a small run's cuts
(:data:`backdoor_repro.profiles.SMALL_RUN_SETTINGS`) and the precision.
"""
from __future__ import annotations

import torch

from .attacks import check_attack_size, get_attack
from .data import ImageSet, fingerprint
from .defenses import get_defense
from .profiles import SMALL_RUN_SETTINGS, Profile, small_schedule, small_width
from .protocol import COMMON_HOLDOUT, OWN_ARCHITECTURE, PROTOCOLS, common_overrides
from .spec import Holdout, RunSpec, machine_numerics

ARCHITECTURE_FIELDS = ("model", "width", "no_defense_schedule", "normalization")  # what OWN_ARCHITECTURE keeps


def profile_attack_overrides(profile: Profile, attack: str) -> dict:
    """The profile's settings for ``attack``: its ``rate`` applies to dirty-label attacks only."""
    overrides = dict(profile.attack_overrides)
    if get_attack(attack).label_mode == "clean_label":
        overrides.pop("rate", None)
    return overrides


def attack_settings(profile: Profile, attack: str, defense: str | None, protocol: str, explicit: dict) -> dict:
    """The attack's overrides: the profile's, then the protocol's, then the caller's."""
    overrides = profile_attack_overrides(profile, attack)
    if protocol == "common":
        overrides.update(common_overrides(attack))
    elif defense is not None:
        overrides.update(get_defense(defense).attack_overrides(attack, profile.dataset))
    overrides.update(explicit)
    return overrides


def protocol_holdout(profile: Profile, defense: str | None, protocol: str) -> Holdout | None:
    """``common``: one class-balanced clean holdout for every cell; ``own``: the one the defense's threat model grants."""
    if protocol == "common":
        return COMMON_HOLDOUT[profile.name]
    return get_defense(defense).holdout_for(profile.name, profile.dataset) if defense is not None else None


def protocol_changes(profile: Profile, defense: str | None, protocol: str) -> dict:
    """The spec fields a defense's protocol sets (``own``: all of them; ``common``: only the architecture of a
    defense built for one network, :data:`~backdoor_repro.protocol.OWN_ARCHITECTURE`)."""
    if defense is None:
        return {}
    changes = get_defense(defense).spec_changes_for(profile.name, profile.dataset)
    if protocol == "common":
        return {k: v for k, v in changes.items() if k in ARCHITECTURE_FIELDS} if defense in OWN_ARCHITECTURE else {}
    return changes


def precision_for(profile: Profile, device_type: str, small_run: str | None) -> str:
    """bf16 autocast on CUDA unless the profile trains in fp32 (paper, as the official code); on the CPU only in a
    dry run of a bf16 profile, where the CPU has native bf16 kernels (emulated bf16 is ~17x slower on AVX2)."""
    if not profile.bf16:
        return "fp32"
    if device_type == "cuda":
        return "bf16"
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return "bf16" if small_run == "dry_run" and native else "fp32"


def small_run_cuts(spec: RunSpec, small_run: str | None) -> RunSpec:
    """A small run's No-Defense schedule and network width (profiles.SMALL_RUN_SETTINGS); otherwise ``spec``."""
    if small_run is None:
        return spec
    small = SMALL_RUN_SETTINGS[small_run]
    return spec.with_(no_defense_schedule=small_schedule(spec.no_defense_schedule, small),
                      width=small_width(spec.width, small, spec.device_type))


def resolve(profile: Profile, train: ImageSet, attack: str | None, defense: str | None = None, *,
            protocol: str = "own", small_run: str | None = None, data_seed: int = 0, seed: int = 0,
            holdout: Holdout | None = None, **attack_overrides) -> RunSpec:
    """The run spec of ``attack`` (None: a clean model) under ``profile`` on the loaded ``train``, for ``defense``
    under ``protocol``; ``holdout`` replaces the protocol's. Unknown keys and bad values are errors here, before
    any compute."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if small_run is not None and small_run not in SMALL_RUN_SETTINGS:
        raise ValueError(f"unknown small run {small_run!r}; choose from {', '.join(SMALL_RUN_SETTINGS)}")
    if defense is not None:
        get_defense(defense)
    overrides = {}
    if attack is not None:
        overrides = attack_settings(profile, attack, defense, protocol, attack_overrides)
        check_attack_size(attack, tuple(train.images.shape), data_seed, **overrides)  # before any compute
    elif attack_overrides:
        raise ValueError("attack overrides given for a clean model (attack=None)")
    if holdout is None:
        holdout = protocol_holdout(profile, defense, protocol)
    device_type = train.images.device.type
    spec = RunSpec(profile.dataset, profile.train_per_class, profile.model, profile.width, train.num_classes, attack,
                   overrides, data_seed, seed, profile.no_defense_schedule_for(attack), holdout, fingerprint(train), device_type,
                   numerics=machine_numerics(device_type), precision=precision_for(profile, device_type, small_run),
                   small_run=small_run)
    changes = protocol_changes(profile, defense, protocol)
    return small_run_cuts(spec.with_(**changes) if changes else spec, small_run)
