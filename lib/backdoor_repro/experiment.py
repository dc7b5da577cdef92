"""The setup every notebook shares: checked settings, the profile's data on the device, the artifact cache,
and short calls for specs, run data, defenses and evaluation::

    ex = setup("smoke", defenses=("dbd",))          # prints the profile and the deviations
    spec = ex.spec("badnets_dbd_2x2", defense="dbd")  # the defense's holdout rule, if it has one
    result = ex.run("dbd", spec)                     # the profile's DBD config, cached stages
    ex.evaluate(result.model, spec)                  # ACC, ASR, RA, ACC_no_target, CTR
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch

from .attacks import check_attack_size
from .cache import ArtifactCache, artifact_key
from .data import ImageSet, check_dataset_available, class_balanced_subset, load_dataset
from .defenses import DefenseResult, get_defense
from .evaluation import AttackEvaluator, evaluate
from .pipeline import RunData, data_key, load_data, run_data
from .numerics import pin_cpu_threads
from .profiles import (DRY_RUN_CPU_WIDTH, DRY_RUN_TEST_PER_CLASS, DRY_RUN_TRAIN_PER_CLASS, Profile, check_data_arguments, check_device,
                       check_dry_run, dry_run_profile, dry_run_schedule, profile_for)
from .spec import Holdout, RunSpec
from .fast_step import enable_gpu_step_paths
from .train import enable_cpu_autocast, resolve_device, set_gpu_bf16


def apply_process_settings(profile: Profile, device: torch.device, dry_run: bool) -> bool:
    """Set this process's precision and step paths for ``profile`` (the paper profile trains in fp32 on the GPU, as
    the official code; a CPU dry run of a bf16 profile runs under bf16 autocast where the CPU has native bf16; a dry
    run takes the fused / device-tensor step paths of CUDA, fast_step.py). Returns whether CPU autocast is on."""
    set_gpu_bf16(profile.bf16)
    cpu_bf16 = enable_cpu_autocast(dry_run and device.type == "cpu" and profile.bf16)
    enable_gpu_step_paths(dry_run)
    return cpu_bf16


@dataclass
class Experiment:
    profile: Profile
    device: torch.device
    train: ImageSet
    test: ImageSet
    cache: ArtifactCache
    data_seed: int = 0
    seed: int = 0
    progress: bool = False
    started: float = field(default_factory=time.perf_counter)
    attack_subset: tuple[str, ...] | None = None  # the notebook's ``attacks`` parameter; None: all
    dry_run: bool = False  # every stage cut to a couple of steps (profiles.DRY_RUN_*): code paths, not numbers
    _data: dict = field(default_factory=dict, repr=False)
    _evaluators: dict = field(default_factory=dict, repr=False)

    def spec(self, attack: str | None, defense: str | None = None, holdout: Holdout | None = None,
             seed: int | None = None, **attack_overrides) -> RunSpec:
        """The run spec of ``attack`` under this profile; ``defense`` supplies its threat model's holdout and
        whatever its protocol sets in the spec (T&R: its WRN-16 and its No-Defense schedule)."""
        apply_process_settings(self.profile, self.device, self.dry_run)  # a later setup() must not leak into this one
        changes = {}
        if defense is not None:
            d = get_defense(defense)
            holdout = holdout if holdout is not None else d.holdout_for(self.profile.name, self.profile.dataset)
            changes = d.spec_changes_for(self.profile.name, self.profile.dataset)
        if attack is not None:  # a trigger defined at another image size: a clear error before any compute
            check_attack_size(attack, tuple(self.train.images.shape), self.data_seed, **attack_overrides)
        spec = RunSpec.for_profile(self.profile, self.train, attack, self.data_seed,
                                   self.seed if seed is None else seed, holdout, **attack_overrides)
        return self.shortened(spec.with_(**changes) if changes else spec)

    def shortened(self, spec: RunSpec) -> RunSpec:
        """In a dry run, ``spec`` with its No-Defense schedule cut to one short epoch (and, on the CPU, its network
        narrowed to ``DRY_RUN_CPU_WIDTH``); otherwise ``spec``."""
        if not self.dry_run:
            return spec
        width = min(spec.width, DRY_RUN_CPU_WIDTH) if self.device.type == "cpu" else spec.width
        return spec.with_(supervised=dry_run_schedule(spec.supervised), width=width)

    def data(self, spec: RunSpec) -> RunData:
        """The run data of ``spec`` (built once). Fallback warnings (official indices or a holdout rule that the
        data's order does not allow) are printed as notes, without file paths, so notebook outputs are stable."""
        key = data_key(spec)
        if key not in self._data:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._data[key] = run_data(spec, self.train, self.test, self.cache, self.progress)
            for note in dict.fromkeys(str(w.message) for w in caught):
                print(f"note: {note}")
        return self._data[key]

    def config(self, defense: str, **changes):
        """The profile's config of ``defense`` with ``changes``; in a dry run, cut to a couple of steps per stage."""
        d = get_defense(defense)
        cfg = d.config(self.profile.name, self.profile.dataset, **changes)
        return d.shortened(cfg) if self.dry_run else cfg

    def run(self, defense: str, spec: RunSpec, cfg=None) -> DefenseResult:
        """Run ``defense`` (the profile's config unless ``cfg`` is given) on ``spec``'s data."""
        apply_process_settings(self.profile, self.device, self.dry_run)
        d = get_defense(defense)
        return d.run(spec, self.data(spec), cfg if cfg is not None else self.config(defense), self.cache,
                     self.progress)

    def evaluate(self, model: torch.nn.Module, spec: RunSpec) -> dict:
        if spec.attack is None:
            return evaluate(model, spec, self.test)
        key = artifact_key("evaluator", {"attack": spec.attack, "overrides": spec.attack_overrides,
                                         "data_seed": spec.data_seed}, 1)
        if key not in self._evaluators:
            self._evaluators[key] = AttackEvaluator(spec.make_attack(), self.test)
        return self._evaluators[key](model)

    def attacks_for(self, defaults) -> tuple[str, ...]:
        """``defaults`` (a notebook's attacks under this profile), cut to the ``attacks`` slice if one was given.
        A slice may name attacks of other notebooks (one ``run_all.sh --attacks`` for several); it is an error only
        when it leaves this notebook none."""
        defaults = tuple(defaults)
        if self.attack_subset is None:
            return defaults
        chosen = tuple(a for a in defaults if a in self.attack_subset)
        if not chosen:
            raise ValueError(f"the slice {', '.join(self.attack_subset)} has none of this notebook's attacks on the "
                             f"{self.profile.name} profile: {', '.join(defaults)}")
        return chosen

    def includes(self, attack: str) -> bool:
        """Whether a section that runs ``attack`` belongs to this run (always, unless a subset excludes it)."""
        return self.attack_subset is None or attack in self.attack_subset

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def setup(profile: str = "smoke", data_root=None, download: bool = False, device: str = "auto", data_seed: int = 0,
          seed: int = 0, progress: bool = False, defenses: tuple[str, ...] = (), quiet: bool = False,
          dataset: str | None = None, attacks=None, dry_run: bool = False) -> Experiment:
    """Check the settings (before any compute), load the profile's data (or ``dataset``'s, on ``fast`` / ``paper``),
    print the profile and every deviation of the profile and of ``defenses``. ``attacks`` ("a,b" or a list) runs
    a slice: only those of the notebook's attacks, and only the sections that use them. ``dry_run`` (fast / paper):
    the profile's configs and code paths with every stage cut to a couple of steps, on a slice of the bundled data,
    on any device (see ``profiles.DRY_RUN_*``)."""
    started = time.perf_counter()
    p = profile_for(profile, dataset)
    dev = resolve_device(device)
    if not isinstance(dry_run, bool):
        raise ValueError(f"dry_run must be True or False, got {dry_run!r}")
    if dry_run:
        check_dry_run(p, data_root, download)
        p = dry_run_profile(p)
    else:
        check_device(p, dev)
        check_data_arguments(p, data_root, download)
        check_dataset_available(p.dataset, data_root, download)
    for name in defenses:
        get_defense(name)
    subset = parse_attack_subset(attacks)
    for name, value in (("data_seed", data_seed), ("seed", seed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not quiet:
        print(f"profile {p.outputs}: {p.description}" + (f" (dataset: {p.dataset})" if p.run_name else ""))
        print("Deviations from the papers' code:")
        own_model = any(p.name in get_defense(name).spec_changes for name in defenses)  # e.g. T&R's WRN-16
        model_deviations = () if own_model else p.model_deviations
        listed = p.deviations + model_deviations + tuple(x for name in defenses for x in get_defense(name).deviations[p.name])
        for d in dict.fromkeys(listed):  # once each: defenses of one paper share their protocol's lines
            print(" -", d)
        if subset is not None:
            print(f"slice: attacks {', '.join(subset)} only; sections that need other attacks are skipped")
        if dry_run:
            narrowed = f", networks at width <= {DRY_RUN_CPU_WIDTH} on the CPU" if dev.type == "cpu" else ""
            print(f"DRY RUN: the {p.name} configs with every stage cut to a couple of steps, on {DRY_RUN_TRAIN_PER_CLASS} "
                  f"training / {DRY_RUN_TEST_PER_CLASS} test images per class of the bundled subset{narrowed}; the "
                  "numbers mean nothing and the result checks are skipped")
    if dev.type == "cpu":
        pin_cpu_threads()  # CPU results depend on the thread count (numerics.py)
    cpu_bf16 = apply_process_settings(p, dev, dry_run)  # reset here: one run never inherits another's precision
    if dry_run and dev.type == "cpu" and not quiet:
        print("dry run precision: " + ("bf16 autocast, as on the GPU" if cpu_bf16 else
                                       "fp32, as this profile on the GPU" if not p.bf16 else
                                       "fp32 (this CPU has no native bf16 kernels; this profile runs bf16 on the GPU)"))
    if dry_run:
        train = class_balanced_subset(load_dataset("cifar10-smoke", "train", device=dev), DRY_RUN_TRAIN_PER_CLASS)
        test = class_balanced_subset(load_dataset("cifar10-smoke", "test", device=dev), DRY_RUN_TEST_PER_CLASS)
    else:
        train, test = load_data(p, data_root, download, dev)
    return Experiment(p, dev, train, test, ArtifactCache(), data_seed, seed, progress, started, attack_subset=subset,
                      dry_run=dry_run)


def parse_attack_subset(attacks) -> tuple[str, ...] | None:
    """None, "a,b" or a list of registered attack keys -> a tuple (None: no subset); anything else is an error."""
    from .attacks import ATTACKS

    if attacks is None:
        return None
    if isinstance(attacks, str):
        keys = [a.strip() for a in attacks.split(",") if a.strip()]
    elif isinstance(attacks, (list, tuple)) and all(isinstance(a, str) for a in attacks):
        keys = list(attacks)
    else:
        raise ValueError(f"attacks must be None, 'a,b' or a list of attack keys, got {attacks!r}")
    if not keys:
        raise ValueError("attacks is empty; use None to run all of a notebook's attacks")
    unknown = [a for a in keys if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; registered: {', '.join(sorted(ATTACKS))}")
    return tuple(dict.fromkeys(keys))
