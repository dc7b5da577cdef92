"""One helper for every cached training stage: get or build, time it, rebuild the model, load its weights.

A stage's builder returns a :class:`StageOutput` (the trained model, a per-epoch history, and any other
tensors or values the next stage needs); :func:`cached_stage` stores it under its stage's derived key
(:mod:`backdoor_repro.graph`), and on every call returns the model (on the requested device, in eval mode) and a
:class:`StageRecord` without weights. A stage that evaluates on the test set while it builds passes
``evaluated_on=test``: the test set's fingerprint then joins the key, so a cached history never depends on who
called first.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .cache import ArtifactCache, earlier_attempts
from .data import ImageSet, fingerprint
from .graph import Stage


@dataclass
class StageOutput:
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    extras: dict = field(default_factory=dict)  # tensors and plain values only (loaded with weights_only)


@dataclass
class StageRecord:
    stage: str
    seconds: float  # wall time of the build, summed over attempts when it resumed a killed one (0: never timed)
    history: list[dict]
    extras: dict
    key: str = ""  # the artifact key, for provenance

    def summary(self) -> dict:
        return {"stage": self.stage, "seconds": round(self.seconds, 1), "epochs": len(self.history), "key": self.key}


def cached_stage(cache: ArtifactCache, stage: Stage, build: Callable[[Path], StageOutput],
                 make_model: Callable[[], torch.nn.Module], device, evaluated_on: ImageSet | None = None):
    """``(model, StageRecord)`` of ``stage``: loaded from ``cache`` or built by ``build(partial_path)``."""
    if evaluated_on is not None:
        stage = stage.evaluated_on(fingerprint(evaluated_on))

    def timed_build(partial: Path) -> dict:
        started = time.perf_counter()
        out = build(partial)
        # a killed attempt's training time counts, if its checkpoint was resumed (not one of another config)
        return {"model": out.model.state_dict(), "history": out.history, "extras": out.extras,
                "seconds": earlier_attempts(partial) + time.perf_counter() - started}

    stored = cache.get_or_build(stage, timed_build)
    model = make_model()
    model.load_state_dict(stored["model"])
    return model.to(device).eval(), StageRecord(stage.name, float(stored["seconds"]), list(stored["history"]),
                                                dict(stored["extras"]), stage.key)
