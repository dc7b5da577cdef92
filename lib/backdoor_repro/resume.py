"""Resumable epoch loops (the time budget of a sliced run is :mod:`.deadline`).

Every long stage writes an :class:`EpochCheckpoint` every few epochs (atomically, with the key of the config that
wrote it and the global RNG states) and resumes from it with the same random streams, so a stage killed midway
ends with the weights of an uninterrupted one. ``run_all.sh --max-minutes N`` sets ``BACKDOOR_REPRO_DEADLINE``;
a stage that passes it stops right after writing a checkpoint (or before starting) with
:class:`TimeBudgetExhausted`, and ``run_all.sh`` exits with :data:`TIME_BUDGET_EXIT` so the next slice continues.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from .cache import atomic_save, verified_load
from .deadline import check_time_budget
from .fast_step import load_optimizer_state

class EpochCheckpoint:
    """The resume state of one epoch loop at ``path`` (None: no checkpoints), written every ``every`` epochs before
    the last one. ``config_key`` names what the loop runs under: a checkpoint written under another key is ignored
    with a warning. The global CPU (and CUDA) RNG states travel with it (dropout and ``torch.randperm`` without a
    generator draw from them); so does the training time of earlier attempts (``elapsed``)."""

    def __init__(self, path: str | Path | None, config_key: str, every: int, epochs: int, device: torch.device):
        self.path = Path(path) if path else None
        self.config_key, self.every, self.epochs, self.device = config_key, max(int(every), 1), epochs, device
        self.earlier = 0.0  # training seconds of the attempts before this one
        self.started = time.perf_counter()

    def resume(self, model, optimizer, generator) -> dict | None:
        """Restore ``model``, ``optimizer``, ``generator`` and the global RNGs from the saved state and return it (the
        loop's own entries: ``epoch``, ``history``, ...), or None when there is none or it is another config's."""
        saved = self.load()
        if saved is not None:
            model.load_state_dict(saved["model"])
            load_optimizer_state(optimizer, saved["optimizer"])
            generator.set_state(saved["generator"].cpu())  # generator states are CPU byte tensors, also for CUDA
        return saved

    def load(self) -> dict | None:
        """The saved state (global RNGs restored), or None when there is none or it belongs to another config."""
        saved = verified_load(self.path, map_location=self.device) if self.path else None
        if saved is not None and saved.get("config_key") != self.config_key:
            warnings.warn(f"ignoring the checkpoint {self.path.name}: it was written under another config "
                          "(or by an older version); training starts from epoch 0")
            saved = None
        if saved is None:
            return None
        torch.set_rng_state(saved["global_rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"].cpu(), self.device)
        self.earlier = float(saved.get("elapsed", 0.0))
        return saved

    @property
    def seconds(self) -> float:
        """Training time across attempts, up to now."""
        return self.earlier + time.perf_counter() - self.started

    def after_epoch(self, epoch: int, model, optimizer, generator, **extras) -> None:
        """Call after finishing ``epoch`` (1-based) with the loop's model, optimizer, generator and its own entries
        (``history``, ...). Writes them when due, then stops here if the time budget is spent."""
        if self.path is None or epoch % self.every or epoch >= self.epochs:
            return
        full = dict(extras, model=model.state_dict(), optimizer=optimizer.state_dict(), generator=generator.get_state(),
                    epoch=epoch, config_key=self.config_key, global_rng=torch.get_rng_state(), elapsed=self.seconds)
        if self.device.type == "cuda":
            full["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        atomic_save(full, self.path)
        check_time_budget(f"epoch {epoch} of {self.epochs} ({self.path.name})")
