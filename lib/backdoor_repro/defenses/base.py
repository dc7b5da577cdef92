"""The contract every defense implements, and the registry the notebooks and the grid loop over.

A defense is a registered :class:`Defense` object: its paper, what it needs from the defender's world
(``needs``: a clean holdout, the backdoored model, or nothing), the holdout rule its threat model grants,
its config per profile and its deviations per profile. One call::

    result = defense.run(spec, data, cfg, cache)   # spec: RunSpec (resolve.resolve), data: RunData (pipeline.run_data)

returns a :class:`DefenseResult`: the defended model, a :class:`~backdoor_repro.stages.StageRecord` per
stage (history, seconds), and, where the method scores training samples, a per-sample suspicion score
(higher = more likely poisoned) and the samples it treated as poisoned, from which detection AUROC /
TPR / FPR follow. Ablations are configs of the same defense.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from .. import metrics
from ..cache import ArtifactCache
from ..pipeline import RunData, check_run_data
from ..profiles import apply_overrides
from ..records import ProtocolRecord
from ..spec import Holdout, RunSpec
from ..stages import StageRecord

NEEDS = {
    "clean_holdout": "a small clean subset of the training data (data.clean_holdout)",
    "backdoored_model": "the model the attacker trained on the poisoned set (built and cached from the spec)",
}
PROFILE_NAMES = ("smoke", "cpu", "fast", "paper")


@dataclass
class DefenseResult:
    model: torch.nn.Module
    stages: dict[str, StageRecord]
    suspicion: torch.Tensor | None = None  # (N,) per training sample, higher = more likely poisoned
    flagged: torch.Tensor | None = None  # (N,) bool: the samples the defense treated as poisoned

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages.values())

    def detection(self, poison_mask: torch.Tensor) -> dict:
        """AUROC of ``suspicion`` and TPR / FPR of ``flagged`` against the true poison mask (percent)."""
        out = {}
        if self.suspicion is not None:
            out["AUROC"] = metrics.auroc(self.suspicion, poison_mask)
        if self.flagged is not None:
            out.update(metrics.detection_rates(self.flagged.cpu(), poison_mask.cpu()))
        return out


class Defense:
    """Base class: subclasses set the class attributes and implement :meth:`defend`."""

    key: str
    paper: str  # reported-number key of the paper ("dbd", "trap_replace", "fct", "fmp")
    title: str
    needs: frozenset = frozenset()
    holdout: Holdout | None = None  # the holdout its threat model grants (None: no clean data)
    holdouts: Mapping[str, Holdout] = {}  # per profile, where it differs from `holdout`
    spec_changes: Mapping[str, dict] = {}  # per profile: RunSpec fields its protocol sets (model, width, schedule)
    configs: Mapping[str, Any] = {}
    deviations: Mapping[str, tuple[str, ...]] = {}
    small_run: Mapping[str, Any] = {}  # config overrides for a small run: a couple of steps per stage
    record: ProtocolRecord | None = None  # what its paper's notebook runs and checks (records.py)
    reads_poisoned_set: bool = True  # trains or scores on the poisoned training set (False: starts from the model)

    def holdout_for(self, profile: str, dataset: str | None = None) -> Holdout | None:
        """The holdout rule for ``profile`` (and ``dataset``, where a defense's code treats datasets differently)."""
        return self.holdouts.get(profile, self.holdout)

    def spec_changes_for(self, profile: str, dataset: str) -> dict:
        """The RunSpec fields its protocol sets for ``profile`` on ``dataset`` (FCT: another network on CIFAR-100)."""
        return dict(self.spec_changes.get(profile, {}))

    def for_dataset(self, cfg, dataset: str):
        """``cfg`` as its official code sets it on ``dataset`` (FMP: a larger random start off CIFAR-10)."""
        return cfg

    def attack_overrides(self, attack: str, dataset: str) -> dict:
        """The attack parameters its own paper's protocol sets on ``dataset`` (T&R: target 1 on GTSRB)."""
        return {}

    def __repr__(self) -> str:
        return f"<defense {self.key}: {self.title}>"

    def config(self, profile: str, dataset: str | None = None, **changes):
        """The config of ``profile`` (on ``dataset``, where its code sets other values there) with ``changes``
        (unknown fields are errors)."""
        if profile not in self.configs:
            raise ValueError(f"defense {self.key!r} has no config for profile {profile!r}; known: {', '.join(self.configs)}")
        cfg = self.configs[profile] if dataset is None else self.for_dataset(self.configs[profile], dataset)
        if not changes:
            return cfg
        names = {f.name for f in dataclasses.fields(cfg)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"{self.key} config has no field {', '.join(unknown)}; fields: {', '.join(sorted(names))}")
        return dataclasses.replace(cfg, **changes)

    def small_config(self, profile: str, dataset: str | None = None):
        """The profile's config with the ``small_run`` overrides: a couple of steps per stage (dry runs, the grid's
        plumbing, the contract tests)."""
        return apply_overrides(self.config(profile, dataset), dict(self.small_run))

    def check(self, spec: RunSpec, data: RunData) -> None:
        """Clear errors before any compute: data built from another spec, a missing holdout, no attack."""
        if spec.attack is None:
            raise ValueError(f"{self.key}: the spec has no attack; a defense runs on a poisoned training set")
        check_run_data(spec, data)
        if self.reads_poisoned_set and spec.training_controlled:
            raise ValueError(f"{self.key} works on the poisoned training set, but {spec.attack} poisons inside its "
                             "own training loop and leaves none: run a defense that starts from the backdoored model "
                             "(none, ft, fp, anp, fmp) or a data-poisoning variant of the attack")
        if "clean_holdout" in self.needs and data.clean_holdout is None:
            raise ValueError(f"{self.key} needs a clean holdout: build the spec with holdout={self.holdout!r} "
                             "(Experiment.spec(attack, defense=...) does)")

    def run(self, spec: RunSpec, data: RunData, cfg=None, cache: ArtifactCache | None = None,
            progress: bool = False) -> DefenseResult:
        """Check the inputs (before any compute), set the process's numerics from the spec, then :meth:`defend`.
        ``cfg`` may be left out only where every profile has the same config (No Defense)."""
        if cfg is None:
            if len({repr(c) for c in self.configs.values()}) != 1:
                raise ValueError(f"{self.key}: give its config, e.g. defense.config('smoke')")
            cfg = next(iter(self.configs.values()))
        self.check(spec, data)
        spec.apply_numerics()
        return self.defend(spec, data, cfg, cache or ArtifactCache(), progress)

    def defend(self, spec: RunSpec, data: RunData, cfg, cache: ArtifactCache, progress: bool) -> DefenseResult:
        """The defense's stages on ``data`` (checked against ``spec``) with ``cfg``; subclasses implement it."""
        raise NotImplementedError


DEFENSES: dict[str, Defense] = {}


def register_defense(defense: Defense) -> Defense:
    """Add ``defense`` to the registry after checking that it declares everything the contract asks for."""
    if defense.key in DEFENSES:
        raise ValueError(f"defense {defense.key!r} is already registered")
    unknown = set(defense.needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"{defense.key}: unknown needs {sorted(unknown)}; known: {sorted(NEEDS)}")
    missing = [p for p in PROFILE_NAMES if p not in defense.configs or p not in defense.deviations]
    if missing:
        raise ValueError(f"{defense.key}: no config or deviation list for profile(s) {missing}")
    for profile, cfg in defense.configs.items():  # the small-run overrides name fields the configs have
        apply_overrides(cfg, dict(defense.small_run))
    if not isinstance(defense.record, ProtocolRecord):
        raise ValueError(f"{defense.key}: no protocol record (records.ProtocolRecord: its notebook, attacks, checks)")
    if "clean_holdout" in defense.needs and defense.holdout is None:
        raise ValueError(f"{defense.key} needs a clean holdout but declares no holdout rule")
    DEFENSES[defense.key] = defense
    return defense


def get_defense(key: str) -> Defense:
    if key not in DEFENSES:
        raise ValueError(f"unknown defense {key!r}; registered: {', '.join(sorted(DEFENSES))}")
    return DEFENSES[key]
