"""Resumable epoch loops (the time budget of a sliced run is :mod:`.deadline`).

Every long stage writes an :class:`EpochCheckpoint` every few epochs (atomically, with the key of what wrote it:
the loop's config, a full-content hash of its training data and the machine's numerics; and the global RNG states)
and resumes from it with the same random streams, so a stage killed midway ends with the weights of an
uninterrupted one. ``run_all.sh --max-minutes N`` sets ``BACKDOOR_REPRO_DEADLINE``; a loop checks it at the end of
every epoch and, once it has passed, writes its checkpoint right then and stops with :class:`TimeBudgetExhausted`
(a stage that has not started does not start), and ``run_all.sh`` exits with :data:`TIME_BUDGET_EXIT` so the next
slice continues.
"""
from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path

import torch

from .cache import artifact_key, atomic_save, resumed_from, verified_load
from .deadline import check_time_budget, deadline_passed
from .fast_step import load_optimizer_state
from .numerics import cpu_numerics
from .progress import EpochProgress, current_stage

HASH_CHUNK = 1 << 26  # elements per piece hashed (64 MiB of uint8 images): a GPU set is copied to the host in pieces


def data_hash(*tensors: torch.Tensor) -> str:
    """A hash of the full content of ``tensors`` (their dtypes, shapes and every element; blake2b): tells apart two
    training sets of the same size whatever part of them differs. About a second per 500 MB on a CPU core."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        h.update(repr((str(t.dtype), tuple(t.shape))).encode())
        flat = t.detach().reshape(-1)
        for start in range(0, flat.numel(), HASH_CHUNK):
            h.update(flat[start:start + HASH_CHUNK].cpu().contiguous().numpy())
    return h.hexdigest()


def machine_tag(device: torch.device) -> str:
    """The machine numerics a loop's results depend on: the CPU's kernel family, caps and threads
    (:func:`backdoor_repro.numerics.cpu_numerics`); ``cuda`` on a GPU (not bit-reproducible anyway)."""
    return cpu_numerics() if torch.device(device).type == "cpu" else torch.device(device).type


def checkpoint_key(config_key: str, data=None, device="cpu") -> str:
    """What a checkpoint must have been written under to be resumed: the loop's own ``config_key``, the training data
    (``(images, labels)``, hashed in full by :func:`data_hash`; None: not named) and :func:`machine_tag`. Not an
    artifact key: checkpoints written before this key existed are ignored once, with a warning."""
    return artifact_key("epoch_checkpoint", {"config": config_key, "data": None if data is None else data_hash(*data),
                                             "numerics": machine_tag(device)}, 1)


class EpochCheckpoint:
    """The resume state of one epoch loop at ``path`` (None: no checkpoints), written every ``every`` epochs before
    the last one, and at the end of any epoch once the deadline has passed (then it stops). ``config_key`` names what
    the loop runs under and ``data`` (``(images, labels)``) what it trains on, computed once here: a checkpoint written
    under another config, other data or other machine numerics (:func:`checkpoint_key`) is ignored with a warning.
    The global CPU (and CUDA) RNG states travel with it (dropout and ``torch.randperm`` without a generator draw from
    them); so does the training time of earlier attempts (``elapsed``). Every epoch is reported to the run's progress
    lines (:mod:`.progress`), with the time left at this attempt's pace."""

    def __init__(self, path: str | Path | None, config_key: str, every: int, epochs: int, device: torch.device,
                 data: tuple[torch.Tensor, ...] | None = None):
        self.path = Path(path) if path else None
        self.every, self.epochs, self.device = max(int(every), 1), epochs, device
        self.config_key = checkpoint_key(config_key, data, device) if self.path else config_key
        self.earlier = 0.0  # training seconds of the attempts before this one
        self.started = time.perf_counter()
        self.progress = EpochProgress(epochs)

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
            warnings.warn(f"ignoring the checkpoint {self.path.name}: it was written under another config, other "
                          "training data or other machine numerics (or by an older version); training starts from "
                          "epoch 0")
            saved = None
        if saved is None:
            return None
        torch.set_rng_state(saved["global_rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"].cpu(), self.device)
        self.earlier = float(saved.get("elapsed", 0.0))
        resumed_from(self.path, self.earlier)  # the build that owns this checkpoint counts that time (cache.py)
        self.progress.resumed_at(int(saved.get("epoch", 0)))
        return saved

    @property
    def seconds(self) -> float:
        """Training time across attempts, up to now."""
        return self.earlier + time.perf_counter() - self.started

    def after_epoch(self, epoch: int, model, optimizer, generator, **extras) -> None:
        """Call after finishing ``epoch`` (1-based) with the loop's model, optimizer, generator and its own entries
        (``history``, ...). Writes them when due, or at once when the deadline has passed, and then stops here with
        :class:`TimeBudgetExhausted` if it has (never after the last epoch: the stage's artifact follows)."""
        fallback = self.path.parent.name if self.path else "training"  # a loop run outside the artifact cache
        self.progress.after_epoch(epoch, self.seconds, current_stage(fallback))
        if self.path is None or epoch >= self.epochs or (epoch % self.every and not deadline_passed()):
            return
        full = dict(extras, model=model.state_dict(), optimizer=optimizer.state_dict(), generator=generator.get_state(),
                    epoch=epoch, config_key=self.config_key, global_rng=torch.get_rng_state(), elapsed=self.seconds)
        if self.device.type == "cuda":
            full["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        atomic_save(full, self.path)
        check_time_budget(f"epoch {epoch} of {self.epochs} ({self.path.name})")
