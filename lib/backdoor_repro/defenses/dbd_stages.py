"""The three training stages of DBD (Huang et al., ICLR 2022) as the official code runs them.

1. :func:`train_simclr` — self-supervised backbone on the poisoned images without labels (DBD's
   asymmetric SimCLR loss, projection head 512-512-BN-ReLU-128, SGD, cosine over ``schedule_epochs``
   of which ``epochs`` are run: the official code uses epoch 100 of a 1,000-epoch schedule).
2. :func:`train_head` — a linear head on the frozen backbone with symmetric cross-entropy; the
   backbone's BatchNorm statistics still update (the official "frozen" backbone runs in train mode).
3. :func:`finetune` — the credible (lowest-SCE-loss) half keeps its labels, the rest is unlabeled, and
   the whole network is fine-tuned with MixMatch (or, for the ablation, plain CE on the credible half).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import AUGMENTATIONS, augment, to_float
from ..cache import artifact_key
from ..metrics import auroc
from ..models import ContrastiveEncoder
from ..losses import (linear_rampup, mix_coefficient, mixmatch_losses, mixmatch_mix, one_hot, sharpen, simclr_loss_dbd,
                      symmetric_cross_entropy)
from ..resume import EpochCheckpoint
from ..fast_step import StepValues
from ..train import (Objective, TrainConfig, autocast, batched_outputs, model_input, optimizer_step, prepare_model,
                     train_model)
from ..views import simclr_views

SIMCLR_CHECKPOINT_EVERY = 5  # epochs (a paper-profile SimCLR epoch is ~100 steps of 512)
HEAD_CHECKPOINT_EVERY = 2  # epochs (a paper-profile head epoch is one frozen-backbone pass over the training set)
FINETUNE_CHECKPOINT_EVERY = 1  # epochs (one MixMatch epoch is ``iterations`` steps)


@dataclass(frozen=True)
class SimCLRConfig:
    epochs: int = 100
    schedule_epochs: int = 1000  # T_max of the cosine schedule
    batch_size: int = 512
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    temperature: float = 0.5
    projection_dim: int = 128
    blur: bool = True
    compile: bool = False  # torch.compile the encoder's training forward (train.prepare_model)


@dataclass(frozen=True)
class HeadConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.002
    loss: str = "sce"  # "sce" (DBD) or "ce" (ablation)
    sce_alpha: float = 0.1
    sce_beta: float = 1.0
    augmentation: str = "crop_flip_reflect"

    def __post_init__(self):
        if self.loss not in ("sce", "ce"):
            raise ValueError(f"head loss must be 'sce' or 'ce', got {self.loss!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 190
    iterations: int = 1024  # per epoch
    batch_size: int = 64  # labeled and unlabeled each
    credible_fraction: float = 0.5  # the paper's filtering rate alpha ("epsilon" in the code)
    reselect: str = "every_epoch"  # official code; "once" = the paper's figure
    mode: str = "mixmatch"  # or "supervised" (ablation: CE on the credible half only)
    temperature: float = 0.5
    mix_alpha: float = 0.75
    lambda_u: float = 15.0
    rampup_epochs: float = 190.0  # lambda_u ramp, counted in global epochs from 0 (warm-up included)
    augmentation: str = "crop_flip_reflect"
    compile: bool = False  # torch.compile the classifier's MixMatch forwards (train.prepare_model)

    def __post_init__(self):
        if not 0 < self.credible_fraction < 1:
            raise ValueError("credible_fraction must be in (0, 1)")
        if self.reselect not in ("every_epoch", "once") or self.mode not in ("mixmatch", "supervised"):
            raise ValueError("reselect must be 'every_epoch' or 'once'; mode 'mixmatch' or 'supervised'")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augmentation!r}")


def SelfSupervised(backbone: nn.Module, normalize: nn.Module, projection_dim: int) -> ContrastiveEncoder:
    """Backbone + DBD's projection head (Linear-BN-ReLU-Linear, L2-normalised output)."""
    return ContrastiveEncoder(backbone, normalize, projection_dim, batch_norm=True)


class SimCLRObjective(Objective):
    """DBD's stage 1: both SimCLR views of a batch through the network in one forward of 2b images, as the official
    code runs them, so BatchNorm normalises over both views together; the asymmetric SimCLR loss. The views are
    drawn outside autocast, from the loop's generator."""

    def __init__(self, cfg: SimCLRConfig):
        self.cfg = cfg

    def loss(self, model, x, y, gen, idx):
        with torch.autocast(x.device.type, enabled=False):
            views = torch.cat([simclr_views(x, gen, self.cfg.blur), simclr_views(x, gen, self.cfg.blur)])
        z1, z2 = model(model_input(views)).float().chunk(2)
        return simclr_loss_dbd(z1, z2, self.cfg.temperature), None


def train_simclr(model: ContrastiveEncoder, images: torch.Tensor, cfg: SimCLRConfig, seed: int,
                 checkpoint=None) -> list[dict]:
    """Stage 1 on the shared loop (:func:`~backdoor_repro.train.train_model`): SGD with CosineAnnealingLR stepped per
    epoch over ``schedule_epochs``, no drop_last (as the official loader). With ``checkpoint`` (a path) it saves its
    state every ``SIMCLR_CHECKPOINT_EVERY`` epochs and resumes from it with the same random streams."""
    loop = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, schedule="cosine_epoch", schedule_epochs=cfg.schedule_epochs,
                       augmentation="none", seed=seed, compile=cfg.compile, checkpoint_every=SIMCLR_CHECKPOINT_EVERY)
    no_labels = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
    result = train_model(model, images, no_labels, loop, checkpoint=checkpoint, progress=False, desc="simclr",
                         objective=SimCLRObjective(cfg))
    model.train()  # as the stage leaves it (the caller keeps the backbone)
    return [{"epoch": h["epoch"], "simclr_loss": h["train_loss"], "lr": h["lr"]} for h in result.history]


def head_loss(logits, labels, cfg: HeadConfig, reduction="mean"):
    if cfg.loss == "ce":
        return F.cross_entropy(logits, labels, reduction=reduction)
    return symmetric_cross_entropy(logits, labels, cfg.sce_alpha, cfg.sce_beta, reduction)


class HeadObjective(Objective):
    """DBD's stage 2: the backbone under ``no_grad`` in train mode (its BatchNorm statistics update, as the official
    code), the linear head trained with SCE (or CE, the ablation) in fp32."""

    def __init__(self, cfg: HeadConfig):
        self.cfg = cfg

    def loss(self, model, x, y, gen, idx):
        with torch.no_grad():
            feats = model.features(x)
        with torch.autocast(x.device.type, enabled=False):
            logits = model.head(feats.float())
            return head_loss(logits, y, self.cfg), logits


def train_head(model: nn.Module, images, labels, cfg: HeadConfig, seed: int, checkpoint=None):
    """Stage 2 on the shared loop: Adam (the backbone's parameters get no gradient), constant lr. Returns
    ``(history, optimizer)``; the Adam instance continues into stage 3. With ``checkpoint`` (a path) it saves its
    state every ``HEAD_CHECKPOINT_EVERY`` epochs and resumes from it."""
    loop = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer="adam", weight_decay=0.0,
                       schedule="constant", augmentation=cfg.augmentation, seed=seed,
                       checkpoint_every=HEAD_CHECKPOINT_EVERY)
    result = train_model(model, images, labels, loop, checkpoint=checkpoint, progress=False, desc="dbd-head",
                         objective=HeadObjective(cfg))
    model.train()  # as the stage leaves it: MixMatch continues in train mode
    return [{"epoch": h["epoch"], "head_loss": h["train_loss"]} for h in result.history], result.optimizer


@torch.no_grad()
def per_sample_loss(model, images, labels, cfg: HeadConfig, augmentation: str, gen, batch_size=1024):
    """Per-sample SCE (or CE) in eval mode on one augmented view, as DBD ranks samples."""
    model.eval()
    logits = batched_outputs(lambda x: model(x).float(), images, images.device, batch_size,
                             transform=lambda x: augment(x, augmentation, gen))
    model.train()
    return head_loss(logits, labels, cfg, reduction="none")


def interleave(chunks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Swap part i of chunk 0 with part i of chunk i, so each forward's BatchNorm sees labeled and
    unlabeled samples (MixMatch's interleaving). Applying it twice restores the order."""
    k, b = len(chunks), chunks[0].shape[0]
    sizes = [b // k] * k
    for j in range(b - sum(sizes)):
        sizes[-1 - j] += 1
    parts = [list(torch.split(c, sizes)) for c in chunks]
    for i in range(1, k):
        parts[0][i], parts[i][i] = parts[i][i], parts[0][i]
    return [torch.cat(p) for p in parts]


def _batches(pool: torch.Tensor, count: int, batch: int, gen) -> torch.Tensor:
    """``count`` batches of ``batch`` indices from ``pool``, reshuffled whenever it is exhausted
    (drop_last per pass), as a ``(count, batch)`` tensor on the pool's device."""
    per_pass = pool.shape[0] // batch
    if per_pass == 0:
        raise ValueError(f"{pool.shape[0]} samples cannot fill a batch of {batch}")
    passes = math.ceil(count / per_pass)
    perms = [pool[torch.randperm(pool.shape[0], device=pool.device, generator=gen)][: per_pass * batch] for _ in range(passes)]
    return torch.cat(perms).view(-1, batch)[:count]


def finetune(model, opt, images, labels, poison_mask, head_cfg: HeadConfig, cfg: FinetuneConfig, seed: int,
             warmup_epochs: int, evaluate=None, checkpoint=None):
    """Stage 3. Every epoch (or once): rank by per-sample loss, keep the lowest ``credible_fraction``
    labeled; then ``iterations`` MixMatch steps of ``batch_size`` labeled + ``batch_size`` unlabeled.
    Returns ``(history, losses, credible)``: the per-sample losses of the last ranking and the indices of
    the last credible half (``poison_mask`` only feeds the diagnostics in the history). With ``checkpoint``
    (a path) it saves its state every ``FINETUNE_CHECKPOINT_EVERY`` epochs and resumes from it."""
    device = images.device
    model, step_model = prepare_model(model, device, cfg)
    gen = torch.Generator(device=device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    k = int(cfg.credible_fraction * images.shape[0])
    history, credible, rest, last_losses, start = [], None, None, None, 0
    key = {"head": head_cfg, "cfg": cfg, "n": images.shape[0], "seed": seed, "warmup": warmup_epochs}
    ckpt = EpochCheckpoint(checkpoint, artifact_key("finetune_checkpoint", key, 1), FINETUNE_CHECKPOINT_EVERY,
                           cfg.epochs, device, data=(images, labels))
    saved = ckpt.resume(model, opt, gen)
    if saved is not None:
        rng.bit_generator.state = saved["numpy_rng"]
        start, history = saved["epoch"], list(saved["history"])
        credible, rest, last_losses = saved["credible"], saved["rest"], saved["losses"]
    for epoch in range(start, cfg.epochs):
        losses = None
        if credible is None or cfg.reselect == "every_epoch":
            losses = last_losses = per_sample_loss(model, images, labels, head_cfg, cfg.augmentation, gen)
            order = torch.argsort(losses)
            credible, rest = order[:k], order[k:]
        lab = _batches(credible, cfg.iterations, cfg.batch_size, gen)
        unl = _batches(rest, cfg.iterations, cfg.batch_size, gen)
        lx_sum, lu_sum = train_iterations(step_model, opt, images, labels, lab, unl, cfg, gen, rng,
                                          warmup_epochs + epoch)
        poisoned_credible = int(poison_mask[credible].sum())
        record = {"epoch": warmup_epochs + epoch + 1, "lx": lx_sum.item() / cfg.iterations,
                  "lu": lu_sum.item() / cfg.iterations, "poisoned_in_credible": poisoned_credible,
                  "credible": k, "poisoned_total": int(poison_mask.sum())}
        if losses is not None:
            record["sce_loss_auroc"] = auroc(losses, poison_mask)
        if evaluate is not None:
            record.update(evaluate(model))
        history.append(record)
        ckpt.after_epoch(epoch + 1, model, opt, gen, numpy_rng=rng.bit_generator.state, history=history,
                         credible=credible, rest=rest, losses=last_losses)
    model.eval()
    return history, last_losses, credible


def mixmatch_step(model, opt, x, y, u1, u2, cfg: FinetuneConfig, rng, gen, rampup_t: float, lam=None, weight=None):
    """One MixMatch update on an augmented labeled batch ``x, y`` and two views ``u1, u2`` of an
    unlabeled batch. Returns the detached ``(Lx, Lu)``. ``lam`` (MixUp's λ) and ``weight`` (λ_u times the ramp at
    ``rampup_t``) may be given, drawn and computed ahead for the epoch (floats or 0-dim device tensors)."""
    if weight is None:
        weight = cfg.lambda_u * linear_rampup(rampup_t, cfg.rampup_epochs)
    device = x.device
    with torch.no_grad(), autocast(device):
        guess = (model(model_input(u1)).float().softmax(1) + model(model_input(u2)).float().softmax(1)) / 2
        guess = sharpen(guess, cfg.temperature)
    targets = torch.cat([one_hot(y, model.head.out_features), guess, guess])
    mixed_x, mixed_t, _ = mixmatch_mix(torch.cat([x, u1, u2]), targets, cfg.mix_alpha, rng, gen, lam=lam)
    chunks = interleave(list(torch.split(mixed_x, x.shape[0])))
    with autocast(device):
        logits = torch.cat(interleave([model(model_input(c)).float() for c in chunks]))
    lx, lu = mixmatch_losses(logits[: x.shape[0]], mixed_t[: x.shape[0]], logits[x.shape[0]:], mixed_t[x.shape[0]:])
    optimizer_step(opt, lx + weight * lu)
    return lx.detach(), lu.detach()


def train_iterations(model, opt, images, labels, lab, unl, cfg: FinetuneConfig, gen, rng, global_epoch: int):
    """One epoch of stage 3 over the precomputed ``(iterations, batch)`` index tensors ``lab``/``unl``.
    Returns the summed ``(Lx, Lu)`` as device tensors (no host sync)."""
    device = images.device
    model.train()
    lx_sum, lu_sum = torch.zeros((), device=device), torch.zeros((), device=device)
    iterations = lab.shape[0]
    if cfg.mode != "supervised":  # the epoch's λ_u ramp and MixUp λ's, in the order the steps would draw them
        weights = StepValues([cfg.lambda_u * linear_rampup(global_epoch + it / iterations, cfg.rampup_epochs)
                              for it in range(iterations)], device)
        lams = StepValues([mix_coefficient(cfg.mix_alpha, rng) for _ in range(iterations)], device)
    for it in range(iterations):
        x = augment(to_float(images[lab[it]]), cfg.augmentation, gen)
        y = labels[lab[it]]
        if cfg.mode == "supervised":
            with autocast(device):
                lx = F.cross_entropy(model(model_input(x)).float(), y)
            optimizer_step(opt, lx)
            lx_sum += lx.detach()
            continue
        u = to_float(images[unl[it]])
        u1, u2 = augment(u, cfg.augmentation, gen), augment(u, cfg.augmentation, gen)
        lx, lu = mixmatch_step(model, opt, x, y, u1, u2, cfg, rng, gen, global_epoch + it / iterations,
                               lam=lams[it], weight=weights[it])
        lx_sum += lx
        lu_sum += lu
    return lx_sum, lu_sum
