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

import pandas as pd
import torch

from .attacks.base import OFFICIAL_DATASETS
from .cache import ArtifactCache
from .data import ImageSet, check_dataset_available, class_balanced_subset, layout_deviation, load_dataset
from .dataset_fixtures import FIXTURE_LAYOUTS, write_fixture
from .datasets import is_cifar10
from .defenses import DEFENSES, DefenseResult, get_defense
from .evaluation import AttackEvaluator, evaluate, evaluated_attack
from .pipeline import RunData, data_key, load_data, run_data
from .numerics import pin_cpu_threads
from .records import assert_checks
from .claims import summary, verdicts
from .paths import cache_dir
from .report import dataset_label, output_dir, scale_note, write_frame
from .profiles import (SMALL_RUN_SETTINGS, Profile, apply_overrides, check_data_arguments, check_device,
                       check_dry_run, dry_run_profile, profile_for)
from .resolve import precision_for, resolve
from .spec import Holdout, RunSpec
from .train import resolve_device


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
    small_run: str | None = None  # "dry_run", "plumbing": every stage cut to a couple of steps (profiles.SMALL_RUN_SETTINGS)
    _data: dict = field(default_factory=dict, repr=False)
    _evaluators: dict = field(default_factory=dict, repr=False)

    def spec(self, attack: str | None, defense: str | None = None, holdout: Holdout | None = None,
             seed: int | None = None, protocol: str = "own", **attack_overrides) -> RunSpec:
        """The run spec of ``attack`` under this profile (:func:`backdoor_repro.resolve.resolve`); ``defense``
        supplies its threat model's holdout and whatever its protocol sets in the spec (T&R: its WRN-16 and its
        No-Defense schedule)."""
        return resolve(self.profile, self.train, attack, defense, protocol=protocol, small_run=self.small_run,
                       data_seed=self.data_seed, seed=self.seed if seed is None else seed, holdout=holdout,
                       **attack_overrides)

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
        """The profile's config of ``defense`` with ``changes``; in a small run, with the defense's ``small_run``
        overrides (a couple of steps per stage)."""
        d = get_defense(defense)
        cfg = d.config(self.profile.name, self.profile.dataset, **changes)
        return apply_overrides(cfg, dict(d.small_run)) if self.small_run else cfg

    def run(self, defense: str, spec: RunSpec, cfg=None) -> DefenseResult:
        """Run ``defense`` (the profile's config unless ``cfg`` is given) on ``spec``'s data."""
        d = get_defense(defense)
        return d.run(spec, self.data(spec), cfg if cfg is not None else self.config(defense), self.cache,
                     self.progress)

    def check(self, record, attacks) -> None:
        """Assert ``record``'s checks (records.py) on the tables this run wrote, skipped in a dry run; print the
        rules that hold (not the values, which move between machines)."""
        tables = output_dir("tables", self.profile.outputs)
        print("\n".join(assert_checks(record, tables, self.train.num_classes, tuple(attacks), self.profile.name,
                                      self.dry_run)))

    def claims(self, record, attacks) -> pd.DataFrame:
        """The claims table of this run (claims.py): each of ``record``'s claims judged on the tables written,
        written as ``<notebook>_claims`` and summed up in a sentence."""
        table = verdicts(record.claims_for(attacks), output_dir("tables", self.profile.outputs), attacks)
        defense = record.notebook if record.notebook in DEFENSES else None  # T&R's notebook: its own network
        write_frame(table, f"{record.notebook}_claims", self.profile.outputs, caption=self.scale(defense))
        print(f"{self.profile.outputs} profile ({len(self.train):,} training images, {self.profile.model} family at "
              f"base width {self.profile.width}): {summary(table)}")
        return table

    def scale(self, defense: str | None = None) -> str:
        """This run's scale in one line (report.scale_note): profile, dataset, training images and the width of
        ``defense``'s network (the profile's, in a small run narrowed as it runs)."""
        spec = self.spec(None, defense)
        return scale_note(self.profile.outputs, dataset_name(self.profile.dataset), len(self.train), spec.width)

    def attack(self, key: str, **overrides):
        """The registry attack ``key`` as this profile runs it (its rate, indices; ``overrides`` on top)."""
        return self.spec(key, **overrides).make_attack()

    def evaluate(self, model: torch.nn.Module, spec: RunSpec) -> dict:
        spec.apply_numerics()  # the precision the spec's models run in
        if spec.attack is None:
            return evaluate(model, spec, self.test)
        key = (spec.attack, repr(sorted(spec.attack_overrides.items())), spec.data_seed)
        if spec.training_controlled:  # a learned trigger belongs to one attack_training stage
            key += (spec.no_defense_stage().key,)
        elif spec.make_attack().trigger_from_clean_model:  # an optimised one to one clean model's trigger stage
            key += (spec.trigger_stage().key,)
        if key not in self._evaluators:
            self._evaluators[key] = AttackEvaluator(evaluated_attack(spec, self.cache), self.test)
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
    def dry_run(self) -> bool:
        return self.small_run == "dry_run"

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def setup(profile: str = "smoke", data_root=None, download: bool = False, device: str = "auto", data_seed: int = 0,
          seed: int = 0, progress: bool = False, defenses: tuple[str, ...] = (), quiet: bool = False,
          dataset: str | None = None, attacks=None, dry_run: bool = False, small_run: str | None = None) -> Experiment:
    """Check the settings (before any compute), load the profile's data (or ``dataset``'s, on ``fast`` / ``paper``),
    print the profile and every deviation of the profile and of ``defenses``. ``attacks`` ("a,b" or a list) runs
    a slice: only those of the notebook's attacks, and only the sections that use them. ``dry_run`` (fast / paper):
    the profile's configs and code paths with every stage cut to a couple of steps, on a slice of the bundled data,
    on any device; ``small_run="plumbing"``: the grid's machinery check (profiles.SMALL_RUN_SETTINGS)."""
    started = time.perf_counter()
    if not isinstance(dry_run, bool):
        raise ValueError(f"dry_run must be True or False, got {dry_run!r}")
    small_run = "dry_run" if dry_run else small_run
    p, dev = checked_profile(profile, dataset, device, data_root, download, small_run)
    for name in defenses:
        get_defense(name)
    subset = parse_attack_subset(attacks)
    for name, value in (("data_seed", data_seed), ("seed", seed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not quiet:
        data_line = None if small_run else layout_deviation(p.dataset, data_root, download)
        print_header(p, defenses, subset, dev, small_run, (data_line,) if data_line else ())
    if dev.type == "cpu":
        pin_cpu_threads()  # CPU results depend on the thread count (numerics.py)
    train, test = small_run_data(p, small_run, dev, data_root, download) if small_run else load_data(p, data_root, download, dev)
    ex = Experiment(p, dev, train, test, ArtifactCache(), data_seed, seed, progress, started, attack_subset=subset,
                    small_run=small_run)
    ex.spec(None).apply_numerics()  # reset here: one run never inherits another's precision or step paths
    return ex


def checked_profile(profile: str, dataset, device, data_root, download, small_run) -> tuple[Profile, torch.device]:
    """The profile (on ``dataset``) and the device, every argument checked before any compute."""
    p = profile_for(profile, dataset)
    dev = resolve_device(device)
    if small_run is not None and small_run not in SMALL_RUN_SETTINGS:
        raise ValueError(f"unknown small run {small_run!r}; choose from {', '.join(SMALL_RUN_SETTINGS)}")
    if small_run == "dry_run":
        check_dry_run(p, data_root, download)
        return dry_run_profile(p), dev
    check_device(p, dev)
    check_data_arguments(p, data_root, download)
    check_dataset_available(p.dataset, data_root, download)
    return p, dev


def small_run_data(profile: Profile, small_run: str, device: torch.device, data_root=None, download=False):
    """A small run's class-balanced slices: of the bundled subset (dry run on CIFAR-10), of a copy of the profile's
    dataset in its own layout written from the bundled images and read by the real loaders (dry run on another
    dataset: :mod:`backdoor_repro.dataset_fixtures`, under the cache folder, which ``run_all.sh --dry-run`` makes
    temporary), or of the profile's own data (plumbing)."""
    small = SMALL_RUN_SETTINGS[small_run]
    if small.bundled_data and profile.dataset == "cifar10":
        train, test = (load_dataset("cifar10-smoke", split, device=device) for split in ("train", "test"))
    elif small.bundled_data:
        root = write_fixture(profile.dataset, cache_dir() / "dry-run-data", small.train_per_class,
                             small.test_per_class)
        with warnings.catch_warnings():  # the fixture's pickles are not the official release's (md5): expected here
            warnings.filterwarnings("ignore", message=".*differ from the official")
            train, test = load_data(profile, root, False, device)
    else:
        train, test = load_data(profile, data_root, download, device)
    return class_balanced_subset(train, small.train_per_class), class_balanced_subset(test, small.test_per_class)


OTHER_LABELS = {"imagenet12": "ImageNet-12"}  # report.dataset_label names the datasets the papers' tables use


def dataset_name(dataset: str) -> str:
    """How a header names ``dataset`` (CIFAR-10, CIFAR-100, GTSRB, ImageNet-12)."""
    return OTHER_LABELS.get(dataset, dataset_label(dataset))


def header_lines(p: Profile) -> tuple[str, tuple[str, ...]]:
    """``(description, the profile's deviations)`` naming the dataset that runs: the profiles describe CIFAR-10, their
    default; on another dataset its name replaces CIFAR-10's, and where the official index streams do not exist
    (they index CIFAR-10/100 in torchvision's order) the poisoned-indices line says which stream picks them."""
    lines = p.deviations + p.model_deviations
    if is_cifar10(p.dataset):
        return p.description, lines
    name = dataset_name(p.dataset)
    lines = tuple(line.replace("CIFAR-10", name) for line in lines)
    if p.dataset not in OFFICIAL_DATASETS:
        indices = (f"poisoned indices: our own seeded stream (numpy default_rng(data_seed)) for every random rule: the "
                   f"official codes' streams index CIFAR-10/100 in torchvision's order, not {name}; a fixed rule "
                   f"(T&R's first N) takes a seeded shuffle of a class-ordered {name} training set")
        lines = tuple(indices if line.startswith("poisoned indices:") else line for line in lines)
    return p.description.replace("CIFAR-10", name), lines


def print_header(p: Profile, defenses, subset, dev: torch.device, small_run: str | None, data_lines=()) -> None:
    """The profile, every deviation of the profile, of its data and of ``defenses`` (once each), the slice and a
    small run."""
    description, profile_lines = header_lines(p)
    print(f"profile {p.outputs}: {description}" + (f" (dataset: {p.dataset})" if p.run_name else ""))
    print("Deviations from the papers' code:")
    own_model = any(p.name in get_defense(name).spec_changes for name in defenses)  # e.g. T&R's WRN-16
    general, model_deviations = profile_lines[:len(p.deviations)], profile_lines[len(p.deviations):]
    listed = general + tuple(data_lines) + (() if own_model else model_deviations) + tuple(
        x for name in defenses for x in get_defense(name).deviations[p.name])
    for d in dict.fromkeys(listed):  # once each: defenses of one paper share their protocol's lines
        print(" -", d)
    if subset is not None:
        print(f"slice: attacks {', '.join(subset)} only; sections that need other attacks are skipped")
    if small_run == "dry_run":
        small = SMALL_RUN_SETTINGS["dry_run"]
        narrowed = f", networks at width <= {small.width} on the CPU" if dev.type == "cpu" else ""
        where = "the bundled subset" if p.dataset == "cifar10" else (
            f"a {dataset_name(p.dataset)} copy written from the bundled CIFAR-10 images in "
            f"{FIXTURE_LAYOUTS[p.dataset]} and read by the {dataset_name(p.dataset)} loader")
        print(f"DRY RUN: the {p.name} configs with every stage cut to a couple of steps, on {small.train_per_class} "
              f"training / {small.test_per_class} test images per class of {where}{narrowed}; the "
              "numbers mean nothing and the result checks are skipped")
        if dev.type == "cpu":
            cpu_bf16 = precision_for(p, "cpu", small_run) == "bf16"
            print("dry run precision: " + ("bf16 autocast, as on the GPU" if cpu_bf16 else
                                           "fp32, as this profile on the GPU" if not p.bf16 else
                                           "fp32 (this CPU has no native bf16 kernels; this profile runs bf16 on the GPU)"))


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
