"""ANP (Wu & Wang, "Adversarial Neuron Perturbation", NeurIPS 2021), the baseline FMP's authors compare with.

Every BatchNorm neuron k gets a mask m_k in [0, 1] and, during the search, multiplicative perturbations of its
scale and shift: ``BN_k(x) = γ_k (m_k + δ_k) x̂ + β_k (1 + ξ_k)`` with ``|δ|, |ξ| <= eps``. Per batch of the clean
subset (crop + flip): draw δ, ξ uniformly in [-eps, eps], take a signed ascent step of eps on the cross-entropy
(not projected back, as in the code); then one SGD step (momentum 0.9) on the masks of
``alpha · CE(clean) + (1 - alpha) · CE(perturbed)`` and clip them to [0, 1]. Afterwards every neuron whose mask
is at most a fixed threshold is pruned (its γ zeroed, β kept). The threshold is a config value, never chosen on
test data (BackdoorBench picks it from a sweep by test ASR, SCLBD/BackdoorBench#35).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import augment, to_float
from ..cache import artifact_key
from ..graph import Stage
from ..pipeline import RunData, no_defense_model
from ..resume import EpochCheckpoint
from ..stages import StageOutput, cached_stage
from ..train import model_input, prepare_model
from .base import DefenseResult, register_defense
from .fmp import PROTOCOL_DEVIATIONS, FMPProtocolDefense

VERSION = 2
ANP_CHECKPOINT_EVERY = 250  # iterations (ANP runs 2,000)


@dataclass(frozen=True)
class ANPConfig:
    eps: float = 0.4
    steps: int = 1
    alpha: float = 0.2  # weight of the clean loss
    mask_lr: float = 0.2
    iterations: int = 2000
    batch_size: int = 128
    threshold: float = 0.2  # prune neurons whose mask is below it (ANP's default; not tuned on test data)
    augmentation: str = "crop_flip"  # BackdoorBench's train transform (no flip off CIFAR-10)

    def __post_init__(self):
        if not 0 <= self.threshold <= 1 or self.iterations < 1 or self.steps < 1 or self.eps < 0:
            raise ValueError("threshold in [0, 1], positive iterations and steps, eps >= 0")


class PerturbedBatchNorm(nn.Module):
    """Wraps a BatchNorm2d: its normalisation with scale γ(m + δ) and shift β(1 + ξ) (δ = ξ = 0 when off)."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.bn = bn
        c = bn.num_features
        self.mask = nn.Parameter(torch.ones(c, device=bn.weight.device))
        self.noise = nn.Parameter(torch.zeros(c, device=bn.weight.device))
        self.noise_bias = nn.Parameter(torch.zeros(c, device=bn.weight.device))
        self.perturbed = False

    def forward(self, x):
        bn = self.bn
        scale = self.mask + (self.noise if self.perturbed else 0)
        shift = 1 + (self.noise_bias if self.perturbed else 0)
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight * scale, bn.bias * shift,
                            self.training, bn.momentum, bn.eps)


def wrap_batchnorms(model: nn.Module) -> dict[str, PerturbedBatchNorm]:
    """Replace every BatchNorm2d of ``model`` (in place) by a :class:`PerturbedBatchNorm`; ``{name: wrapper}``."""
    wrapped = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                w = PerturbedBatchNorm(child)
                setattr(module, child_name, w)
                wrapped[f"{name}.{child_name}" if name else child_name] = w
    return wrapped


def optimize_masks(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: ANPConfig,
                   gen: torch.Generator, checkpoint=None) -> dict[str, torch.Tensor]:
    """ANP's search on a copy of ``model``; returns the final mask of every BatchNorm, ``{bn name: (C,)}``. With
    ``checkpoint`` (a path) it saves its state every ``ANP_CHECKPOINT_EVERY`` iterations and resumes from there with
    the same random streams. fp32 throughout, as ANP's code (no autocast: the masks move by small steps)."""
    n, device = images.shape[0], images.device
    net = copy.deepcopy(model)
    layers = wrap_batchnorms(net)
    net, _ = prepare_model(net, device)  # channels_last on CUDA (the masks are 1-d: their identity is kept)
    for p in net.parameters():
        p.requires_grad_(False)
    masks = [w.mask for w in layers.values()]
    noises = [t for w in layers.values() for t in (w.noise, w.noise_bias)]
    for t in masks + noises:
        t.requires_grad_(True)
    mask_opt = torch.optim.SGD(masks, lr=cfg.mask_lr, momentum=0.9)
    net.train()
    every = ANP_CHECKPOINT_EVERY  # a chunk of iterations is the checkpoint's "epoch"
    key = artifact_key("anp_checkpoint", {"cfg": cfg, "n": n, "every": every}, VERSION)
    ckpt = EpochCheckpoint(checkpoint, key, 1, -(-cfg.iterations // every), device)
    saved = ckpt.resume(net, mask_opt, gen)
    if saved is None:
        start, order, pos = 0, torch.randperm(n, generator=gen, device=device), 0
    else:
        start, order, pos = saved["epoch"] * every, saved["order"], int(saved["pos"])
    for iteration in range(start, cfg.iterations):
        if pos + cfg.batch_size > n:
            order, pos = torch.randperm(n, generator=gen, device=device), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        x, y = model_input(augment(to_float(images[idx]), cfg.augmentation, gen)), labels[idx]
        if cfg.eps > 0:
            with torch.no_grad():
                for t in noises:
                    t.uniform_(-cfg.eps, cfg.eps, generator=gen)
            for w in layers.values():
                w.perturbed = True
            for _ in range(cfg.steps):  # signed ascent steps of eps / steps, not projected (as the code)
                grads = torch.autograd.grad(F.cross_entropy(net(x), y), noises)
                with torch.no_grad():
                    for t, g in zip(noises, grads):
                        t.add_(g.sign(), alpha=cfg.eps / cfg.steps)
        mask_opt.zero_grad(set_to_none=True)
        loss = 0.0
        if cfg.eps > 0:
            loss = (1 - cfg.alpha) * F.cross_entropy(net(x), y)
            for w in layers.values():
                w.perturbed = False
        loss = loss + cfg.alpha * F.cross_entropy(net(x), y)
        loss.backward()
        mask_opt.step()
        with torch.no_grad():
            for m in masks:
                m.clamp_(0, 1)
        if (iteration + 1) % every == 0:
            ckpt.after_epoch((iteration + 1) // every, net, mask_opt, gen, order=order, pos=pos)
    return {name: w.mask.detach().cpu().clone() for name, w in layers.items()}


@torch.no_grad()
def prune_by_threshold(model: nn.Module, masks: dict[str, torch.Tensor], threshold: float) -> int:
    """Zero the γ of every BatchNorm neuron whose mask is at most ``threshold``; returns how many."""
    modules = dict(model.named_modules())
    count = 0
    for name, m in masks.items():
        idx = torch.nonzero(m <= threshold).flatten()
        modules[name].weight[idx.to(modules[name].weight.device)] = 0
        count += idx.numel()
    return count


ANP_PROFILES = {"paper": ANPConfig(), "fast": ANPConfig(), "cpu": ANPConfig(), "smoke": ANPConfig(iterations=60)}
_ANP_COMMON = ("the pruning threshold is fixed at 0.2, the value commonly cited for ANP (BackdoorBench sweeps 0 to 0.9 and "
               "keeps the threshold with the lowest test ASR, SCLBD/BackdoorBench#35); the search uses FMP's 10 % "
               "clean subset at batch 128 and mask lr 0.2, as ANP's own code (ANP paper: 1 % at 128; BackdoorBench and "
               "the copy in FMP's repository: 5 % at 256, mask lr 0.01, batches sampled with replacement)",
               "noise and batch draws from a seeded torch generator; batches go through the subset without "
               "replacement")
ANP_DEVIATIONS = {"paper": _ANP_COMMON + PROTOCOL_DEVIATIONS["paper"],
                  "cpu": _ANP_COMMON + PROTOCOL_DEVIATIONS["paper"] + PROTOCOL_DEVIATIONS["cpu"],
                  "fast": _ANP_COMMON + PROTOCOL_DEVIATIONS["paper"] + PROTOCOL_DEVIATIONS["fast"],
                  "smoke": _ANP_COMMON + PROTOCOL_DEVIATIONS["smoke"] + (
                      "60 mask iterations (ANP: 2,000); at width 8 (424 BatchNorm neurons) the perturbation eps 0.4 drives "
                      "a large share of the masks below the threshold, so smoke ANP loses most of its clean "
                      "accuracy: a property of the narrow network, not evidence about ANP at full width",)}


class ANP(FMPProtocolDefense):
    key = "anp"
    title = "ANP: prune the BatchNorm neurons most sensitive to adversarial neuron perturbation"
    configs = ANP_PROFILES
    deviations = ANP_DEVIATIONS

    small_run = {"iterations": 2, "batch_size": 8}

    def defend(self, spec, data: RunData, cfg: ANPConfig, cache, progress) -> DefenseResult:
        nd = self.no_defense_record(spec, data, cache, progress)
        device = data.train.images.device

        def build(partial):
            model, _ = no_defense_model(spec, None, cache, progress, data=data)
            gen = torch.Generator(device=device).manual_seed(spec.seed)
            holdout = data.clean_holdout
            masks = optimize_masks(model, holdout.images, holdout.labels.to(device), cfg, gen, partial)
            pruned = prune_by_threshold(model, masks, cfg.threshold)
            return StageOutput(model.eval(), [], {"masks": masks, "pruned": pruned})

        stage = Stage("anp", cfg, VERSION, (spec.no_defense_stage(), spec.granted_stage()))
        model, record = cached_stage(cache, stage, build, spec.new_model, device)
        return DefenseResult(model, {"no_defense": nd, "anp": record})


register_defense(ANP())
