"""The fast supervised loop and batched prediction.

Data stay on the device as uint8; each step indexes a batch, augments it on the device, and runs the
model under bf16 autocast with channels_last (CUDA), BatchNorm in fp32 (models/norm.py), a fused optimizer
whose learning rate is a device tensor set from a per-epoch table (fast_step.py), and optionally
``torch.compile``. Losses accumulate on the device and are read once per epoch, so the step loop has no host
synchronisation. With ``checkpoint=`` a killed run resumes from its last saved epoch with the same RNG stream.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import fast_step
from .augment import AUGMENTATIONS, augment, to_float
from .cache import artifact_key
from .fast_step import StepValues, current_lr, set_lr
from .resume import EpochCheckpoint
from .numerics import keep_inductor_cache_apart

SCHEDULES = ("multistep", "cosine", "cosine_epoch", "warmup_cosine_epoch", "constant")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    optimizer: str = "sgd"  # "adam": torch Adam with coupled (L2) weight decay, momentum unused
    schedule: str = "multistep"  # "cosine" per step; "cosine_epoch" = CosineAnnealingLR stepped per epoch
    schedule_epochs: int | None = None  # the cosine schedules' length (T_max) when it differs from `epochs`
    warmup_epochs: int = 0  # "warmup_cosine_epoch" (SupContrast): linear per-step warm-up over these epochs...
    warmup_from: float = 0.01  # ...from this learning rate...
    min_lr_ratio: float = 0.0  # ...then cosine per epoch (epochs counted from 1) down to lr · min_lr_ratio;
    # also the floor of "cosine_epoch" (CosineAnnealingLR's eta_min = lr · min_lr_ratio)
    milestones: tuple[int, ...] = (100, 150)  # epochs, for "multistep"
    gamma: float = 0.1
    augmentation: str = "crop_flip"
    drop_last: bool = False
    seed: int = 0
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False
    checkpoint_every: int = 5  # epochs, when a checkpoint path is given

    def __post_init__(self):
        for name in ("epochs", "batch_size", "checkpoint_every"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_epochs", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.schedule_epochs is not None:
            _check_int("schedule_epochs", self.schedule_epochs, minimum=1)
        for m in self.milestones:
            _check_int("milestones", m, minimum=1)
        for name, low, high in (("lr", 0, None), ("warmup_from", 0, None), ("gamma", 0, None)):
            _check_number(name, getattr(self, name), low, high, open_low=True)
        for name, low, high in (("momentum", 0, 1), ("weight_decay", 0, None), ("min_lr_ratio", 0, 1)):
            _check_number(name, getattr(self, name), low, high)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augmentation!r}; choose from {', '.join(AUGMENTATIONS)}")

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_number(name: str, value, low: float, high: float | None, open_low: bool = False) -> None:
    """A finite real in [low, high] (``open_low``: low excluded); NaN, infinities, strings and booleans are errors."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if open_low else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0
    optimizer: torch.optim.Optimizer | None = None  # for a stage that continues it (DBD's head -> MixMatch)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA if visible, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; any other device is an error here,
    before any compute (the loops are tested on CPU and CUDA only)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}") from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {str(device)!r}: this package's training loops "
                         "run on CPU and CUDA only")
    if device.type == "cpu" and device.index is not None:
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {str(device)!r}: the CPU takes no index")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is visible")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def lr_factor(cfg: TrainConfig, epoch_progress: float) -> float:
    """Multiplier of the base learning rate at fractional epoch ``epoch_progress``."""
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(epoch_progress >= m for m in cfg.milestones)
    length = cfg.schedule_epochs or cfg.epochs
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch_progress / length, 1.0)))
    if cfg.schedule == "cosine_epoch":  # CosineAnnealingLR(T_max=length, eta_min=lr · min_lr_ratio) per epoch
        cosine = 0.5 * (1 + math.cos(math.pi * min(math.floor(epoch_progress) / length, 1.0)))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine
    if cfg.schedule == "warmup_cosine_epoch":  # SupContrast adjust_learning_rate + warmup_learning_rate
        def cosine(epoch_from_1):
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 + math.cos(math.pi * epoch_from_1 / length)) / 2
        if math.floor(epoch_progress) + 1 <= cfg.warmup_epochs:
            start = cfg.warmup_from / cfg.lr
            return start + epoch_progress / cfg.warmup_epochs * (cosine(cfg.warmup_epochs) - start)
        return cosine(math.floor(epoch_progress) + 1)
    return 1.0


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """``cfg``'s optimizer; fused with a device-tensor learning rate on CUDA (see :mod:`.fast_step`)."""
    if cfg.optimizer == "adam":
        return fast_step.adam(params, cfg.lr, device, weight_decay=cfg.weight_decay)
    return fast_step.sgd(params, cfg.lr, device, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                         nesterov=cfg.nesterov)


def epoch_learning_rates(cfg: TrainConfig, epoch: int, steps_per_epoch: int, device: torch.device) -> StepValues:
    """The learning rate of every step of ``epoch`` (0-based), as :class:`StepValues` on ``device``."""
    return StepValues([cfg.lr * lr_factor(cfg, epoch + step / steps_per_epoch) for step in range(steps_per_epoch)],
                      device)


class Objective:
    """What the supervised loop optimises: which parameters, which modules are in train mode, and the loss
    of an augmented batch (returned with the logits, for the running accuracy). The default is plain
    cross-entropy on the whole model; defenses subclass it (T&R's reconstruction loss, its head-only CutMix)."""

    def parameters(self, model: torch.nn.Module):
        return model.parameters()

    def train_mode(self, model: torch.nn.Module) -> None:
        model.train()

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based), e.g. for objectives that change between phases of one run."""

    def loss(self, model, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, idx: torch.Tensor):
        """``idx``: the batch's indices into the training set (for objectives with per-sample information)."""
        logits = model(x)
        return F.cross_entropy(logits, y), logits


class HeadOnlyObjective(Objective):
    """Train ``model.head`` alone; everything else stays in eval mode (BatchNorm statistics frozen)."""

    def parameters(self, model: torch.nn.Module):
        return model.head.parameters()

    def train_mode(self, model: torch.nn.Module) -> None:
        model.eval()
        model.head.train()


def memory_format(device: torch.device, channels_last: bool = True) -> torch.memory_format:
    """channels_last on CUDA (faster convolutions under autocast); the default layout everywhere else.

    CPU tensors stay in the default layout on purpose: oneDNN's AVX2 backward kernel for 1x1 strided
    convolutions can hang or crash on channels_last inputs with few channels (seen with torch 2.14.1).
    """
    return torch.channels_last if device.type == "cuda" and channels_last else torch.contiguous_format


def prepare_model(model: torch.nn.Module, device: torch.device, cfg: TrainConfig | None = None):
    """Move ``model`` to ``device`` in :func:`memory_format`; returns ``(model, step_model)``, the second
    compiled when ``cfg.compile`` (any config with that field: the supervised loop's, SimCLR's, MixMatch's). The
    step model shares the module's parameters: train through it, checkpoint and evaluate the module."""
    model = model.to(device).to(memory_format=memory_format(device, getattr(cfg, "channels_last", True)))
    if getattr(cfg, "compile", False):
        keep_inductor_cache_apart()  # kernels cached under other CPU kernel caps are not safe to reuse
        return model, torch.compile(model)
    return model, model


def model_input(x: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """``x`` in the layout its device's convolutions want (see :func:`memory_format`)."""
    return x.contiguous(memory_format=memory_format(x.device, channels_last))


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator, device, drop_last: bool = False):
    """One epoch of index batches: a permutation of ``range(n)`` from ``gen``, cut into ``batch_size`` pieces."""
    batches = torch.randperm(n, device=device, generator=gen).split(batch_size)
    if drop_last and batches and batches[-1].shape[0] < batch_size:
        batches = batches[:-1]
    return batches


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


_cpu_autocast = False  # bf16 autocast on the CPU too: only the dry run of a GPU profile (enable_cpu_autocast)
_gpu_bf16 = True  # bf16 autocast on CUDA: the smoke and fast profiles; the paper profile trains in fp32 (set_gpu_bf16)


def set_gpu_bf16(enabled: bool) -> bool:
    """bf16 autocast on CUDA on or off for this process (off: fp32, as the official code). Returns the setting."""
    global _gpu_bf16
    _gpu_bf16 = bool(enabled)
    return _gpu_bf16


def gpu_bf16() -> bool:
    return _gpu_bf16


def enable_cpu_autocast(enabled: bool) -> bool:
    """Run the CPU under bf16 autocast, as CUDA runs (the dry run of a GPU profile), where the CPU has native bf16
    kernels (oneDNN; emulated bf16 is ~17x slower on AVX2). Returns whether it is on."""
    global _cpu_autocast
    _cpu_autocast = bool(enabled) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return _cpu_autocast


def cpu_autocast() -> bool:
    return _cpu_autocast


def bf16_on(device: torch.device, enabled: bool = True) -> bool:
    """Whether a stage on ``device`` runs under bf16 autocast: on CUDA unless the profile trains in fp32
    (:func:`set_gpu_bf16`), on the CPU only in a dry run (:func:`enable_cpu_autocast`)."""
    return enabled and ((device.type == "cuda" and _gpu_bf16) or (device.type == "cpu" and _cpu_autocast))


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast where :func:`bf16_on` says so."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16_on(device, enabled))


def _epoch_checkpoint(checkpoint, cfg: TrainConfig, objective: Objective, images: torch.Tensor,
                      labels: torch.Tensor) -> EpochCheckpoint:
    """The supervised loop's resume state. What a checkpoint must have been written under to be resumed: the config,
    the data size, the objective, the precision, and (:class:`EpochCheckpoint`) the training data's full content and
    the machine's numerics."""
    device = images.device
    config_key = artifact_key("train_checkpoint", {"cfg": cfg, "n": images.shape[0],
                                                   "objective": type(objective).__name__,
                                                   "bf16": bf16_on(device, cfg.amp)}, 1)
    return EpochCheckpoint(checkpoint, config_key, cfg.checkpoint_every, cfg.epochs, device, data=(images, labels))


def train_model(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                     evaluate: Callable[[torch.nn.Module], dict] | None = None, eval_every: int = 0,
                     checkpoint: str | Path | None = None, progress: bool = True, desc: str = "train",
                     objective: Objective | None = None) -> TrainResult:
    """Train ``model`` on uint8 ``images`` (already on the target device) with ``cfg``'s optimizer and schedule
    and ``objective`` (default: cross-entropy on every parameter).

    ``evaluate(model)`` is called after every ``eval_every`` epochs and after the last one; its dict is
    stored in the history. The model is left in eval mode with its last-epoch weights.
    """
    device = images.device
    if labels.device != device:
        raise ValueError("images and labels must be on the same device")
    objective = objective or Objective()
    model, step_model = prepare_model(model, device, cfg)
    opt = make_optimizer(objective.parameters(model), cfg, device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    n = images.shape[0]
    steps_per_epoch = n // cfg.batch_size if cfg.drop_last else math.ceil(n / cfg.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"{n} samples cannot fill one batch of {cfg.batch_size} with drop_last")
    result, start_epoch = TrainResult(), 0
    ckpt = _epoch_checkpoint(checkpoint, cfg, objective, images, labels)
    saved = ckpt.resume(model, opt, gen)
    if saved is not None:
        start_epoch, result.history = saved["epoch"], list(saved["history"])
    started, seen = time.perf_counter(), 0
    bar = tqdm(range(start_epoch, cfg.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        objective.start_epoch(epoch)
        objective.train_mode(model)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        learning_rates = epoch_learning_rates(cfg, epoch, steps_per_epoch, device)
        for step, idx in enumerate(shuffled_batches(n, cfg.batch_size, gen, device, cfg.drop_last)):
            set_lr(opt, learning_rates[step])
            x = model_input(augment(to_float(images[idx]), cfg.augmentation, gen), cfg.channels_last)
            y = labels[idx]
            with autocast(device, cfg.amp):
                loss, logits = objective.loss(step_model, x, y, gen, idx)
            optimizer_step(opt, loss)
            loss_sum += loss.detach() * y.shape[0]
            if logits is not None:  # contrastive objectives have no logits
                correct += (logits.argmax(1) == y).sum()
        seen_epoch = steps_per_epoch * cfg.batch_size if cfg.drop_last else n
        seen += seen_epoch
        record = {"epoch": epoch + 1, "train_loss": loss_sum.item() / seen_epoch,
                  "train_acc": 100 * correct.item() / seen_epoch, "lr": current_lr(opt)}
        if evaluate is not None and ((eval_every and (epoch + 1) % eval_every == 0) or epoch + 1 == cfg.epochs):
            record.update(evaluate(model))
        result.history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.1f}")
        ckpt.after_epoch(epoch + 1, model, opt, gen, history=result.history)
    this_attempt = time.perf_counter() - started
    result.images_per_second = seen / this_attempt if this_attempt > 0 else 0.0
    result.seconds, result.optimizer = ckpt.seconds, opt  # seconds across attempts: a resumed run's whole time
    model.eval()
    return result


@torch.no_grad()
def batched_outputs(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device: torch.device,
                    batch_size: int = 1000, amp: bool = True, transform=None) -> torch.Tensor:
    """``fn`` over uint8 ``images`` in batches on ``device`` (float in [0, 1], ``transform``-ed if given,
    in the device's layout, under autocast); the outputs concatenated. The one inference loop of the package."""
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = to_float(images[start:start + batch_size].to(device))
        if transform is not None:
            x = transform(x)
        with autocast(device, amp):
            out.append(fn(model_input(x)))
    return torch.cat(out)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000, amp: bool = True) -> torch.Tensor:
    """Predicted classes for uint8 ``images`` (on the model's device), in eval mode."""
    device = next(model.parameters()).device
    if images.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        return batched_outputs(lambda x: model(x).argmax(1), images, device, batch_size, amp)
    finally:
        model.train(was_training)
