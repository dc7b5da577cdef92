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

from .cache import ArtifactCache, artifact_key
from .data import ImageSet, check_dataset_available
from .defenses import DefenseResult, get_defense
from .evaluation import AttackEvaluator, evaluate
from .pipeline import RunData, data_key, load_data, run_data
from .numerics import pin_cpu_threads
from .profiles import Profile, check_data_arguments, check_device, profile_for
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
    _data: dict = field(default_factory=dict, repr=False)
    _evaluators: dict = field(default_factory=dict, repr=False)

    def spec(self, attack: str | None, defense: str | None = None, holdout: Holdout | None = None,
             seed: int | None = None, **attack_overrides) -> RunSpec:
        """The run spec of ``attack`` under this profile; ``defense`` supplies its threat model's holdout and
        whatever its protocol sets in the spec (T&R: its WRN-16 and its No-Defense schedule)."""
        changes = {}
        if defense is not None:
            d = get_defense(defense)
            holdout = holdout if holdout is not None else d.holdout_for(self.profile.name, self.profile.dataset)
            changes = dict(d.spec_changes.get(self.profile.name, {}))
        spec = RunSpec.for_profile(self.profile, self.train, attack, self.data_seed,
                                   self.seed if seed is None else seed, holdout, **attack_overrides)
        return spec.with_(**changes) if changes else spec

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
        return get_defense(defense).config(self.profile.name, **changes)

    def run(self, defense: str, spec: RunSpec, cfg=None) -> DefenseResult:
        """Run ``defense`` (the profile's config unless ``cfg`` is given) on ``spec``'s data."""
        d = get_defense(defense)
        return d.run(spec, self.data(spec), cfg if cfg is not None else d.config(self.profile.name), self.cache,
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
          dataset: str | None = None, attacks=None) -> Experiment:
    """Check the settings (before any compute), load the profile's data (or ``dataset``'s, on ``fast`` / ``paper``),
    print the profile and every deviation of the profile and of ``defenses``. ``attacks`` ("a,b" or a list) runs
    a slice: only those of the notebook's attacks, and only the sections that use them."""
    started = time.perf_counter()
    p = profile_for(profile, dataset)
    dev = resolve_device(device)
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
        for d in p.deviations + model_deviations + tuple(x for name in defenses for x in get_defense(name).deviations[p.name]):
            print(" -", d)
        if subset is not None:
            print(f"slice: attacks {', '.join(subset)} only; sections that need other attacks are skipped")
    if dev.type == "cpu":
        pin_cpu_threads()  # CPU results depend on the thread count (numerics.py)
    train, test = load_data(p, data_root, download, dev)
    return Experiment(p, dev, train, test, ArtifactCache(), data_seed, seed, progress, started, attack_subset=subset)


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
