"""ANP (Wu & Wang, "Adversarial Neuron Perturbation", NeurIPS 2021), the baseline FMP's authors compare with, with
BackdoorBench's defaults as FMP's code base runs it (``defense/anp.py`` of FMP's repository, FMT's
``config/defense/anp/cifar10.yaml``).

Every BatchNorm neuron k gets a mask m_k in [0, 1] and, during the search, multiplicative perturbations of its
scale and shift: ``BN_k(x) = γ_k (m_k + δ_k) x̂ + β_k (1 + ξ_k)`` with ``|δ|, |ξ| <= eps``. Per batch of the clean
subset (drawn with replacement, crop + flip): draw δ, ξ uniformly in [-eps, eps], take a signed ascent step of eps on
the cross-entropy (not projected back, as in the code); then one SGD step (momentum 0.9) on the masks of
``alpha · CE(clean) + (1 - alpha) · CE(perturbed)`` and clip them to [0, 1].

One mask search, then BackdoorBench's threshold sweep without retraining: for each threshold 0, 0.05, ..., 0.9 the
neurons whose mask is at most the threshold are pruned (γ zeroed, β kept) and the pruned network is measured.
BackdoorBench keeps the threshold of lowest test ASR among those whose test accuracy stays within ``acc_ratio`` of
the unpruned model's (SCLBD/BackdoorBench#35): that choice looks at the test set, so here it is only reported,
labelled as test-selected (:func:`oracle_threshold`). The defended model takes the largest threshold whose clean-subset
accuracy stays within ``acc_ratio`` (:func:`holdout_threshold`), or a fixed ``threshold`` when the config sets one.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import metrics
from ..augment import augment, to_float
from ..cache import artifact_key
from ..evaluation import AttackEvaluator, evaluated_attack
from ..graph import Stage
from ..pipeline import RunData, no_defense_model
from ..resume import EpochCheckpoint
from ..stages import StageOutput, cached_stage
from ..train import model_input, predict, prepare_model
from .base import DefenseResult, register_defense
from .fmp import PROTOCOL_DEVIATIONS, FMPProtocolDefense

VERSION = 3
ANP_CHECKPOINT_EVERY = 250  # iterations (ANP runs 2,000)
MASK_DECIMALS = 4  # the official code writes the masks to mask_values.txt with 4 decimals and prunes on those


@dataclass(frozen=True)
class ANPConfig:
    # FMT config/defense/anp/cifar10.yaml (the configs of FMP's code base); BackdoorBench v1's anp/cifar10.yaml and
    # ANP's own code set the mask lr to 0.2
    eps: float = 0.4  # anp_eps
    steps: int = 1  # anp_steps
    alpha: float = 0.2  # anp_alpha: weight of the clean loss
    mask_lr: float = 0.01  # lr (the mask optimiser's)
    iterations: int = 2000  # nb_iter (4 rounds of print_every 500)
    batch_size: int = 256
    pruning_max: float = 0.9  # pruning_by threshold, from 0 to pruning_max in steps of pruning_step
    pruning_step: float = 0.05
    acc_ratio: float = 0.1  # the accuracy tolerance of the threshold choice (relative to the unpruned model's)
    threshold: float | None = None  # None: the holdout rule (holdout_threshold); a number: prune at that threshold
    augmentation: str = "crop_flip"  # BackdoorBench's train transform (no flip off CIFAR-10)

    def __post_init__(self):
        if self.iterations < 1 or self.steps < 1 or self.batch_size < 1 or self.eps < 0:
            raise ValueError("positive iterations, steps and batch size, eps >= 0")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be None or in [0, 1], got {self.threshold}")
        if not (0 < self.pruning_step and 0 <= self.pruning_max <= 1 and 0 < self.acc_ratio < 1):
            raise ValueError("pruning_step > 0, pruning_max in [0, 1] and acc_ratio in (0, 1)")


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


def _search_copy(model: nn.Module, device) -> tuple[nn.Module, dict[str, PerturbedBatchNorm]]:
    """A train-mode copy of ``model`` with perturbed BatchNorms whose masks and noises alone take gradients."""
    net = copy.deepcopy(model)
    layers = wrap_batchnorms(net)
    net, _ = prepare_model(net, device)  # channels_last on CUDA (the masks are 1-d: their identity is kept)
    for p in net.parameters():
        p.requires_grad_(False)
    for w in layers.values():
        for t in (w.mask, w.noise, w.noise_bias):
            t.requires_grad_(True)
    return net.train(), layers


def _set_perturbed(layers: dict[str, PerturbedBatchNorm], on: bool) -> None:
    for w in layers.values():
        w.perturbed = on


def mask_step(net, layers, x, y, cfg: ANPConfig, mask_opt, gen: torch.Generator) -> None:
    """One ANP iteration on the batch ``(x, y)``: the neuron perturbation (uniform start, ``steps`` signed ascent
    steps of eps / steps, not projected), then one step of ``mask_opt`` on alpha · CE(clean) + (1 - alpha) ·
    CE(perturbed) and the masks clipped to [0, 1]."""
    noises = [t for w in layers.values() for t in (w.noise, w.noise_bias)]
    if cfg.eps > 0:
        with torch.no_grad():
            for t in noises:
                t.uniform_(-cfg.eps, cfg.eps, generator=gen)
        _set_perturbed(layers, True)
        for _ in range(cfg.steps):
            grads = torch.autograd.grad(F.cross_entropy(net(x), y), noises)
            with torch.no_grad():
                for t, g in zip(noises, grads):
                    t.add_(g.sign(), alpha=cfg.eps / cfg.steps)
    mask_opt.zero_grad(set_to_none=True)
    loss = 0.0
    if cfg.eps > 0:
        loss = (1 - cfg.alpha) * F.cross_entropy(net(x), y)
        _set_perturbed(layers, False)
    loss = loss + cfg.alpha * F.cross_entropy(net(x), y)
    loss.backward()
    mask_opt.step()
    with torch.no_grad():
        for w in layers.values():
            w.mask.clamp_(0, 1)


def optimize_masks(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: ANPConfig,
                   gen: torch.Generator, checkpoint=None) -> dict[str, torch.Tensor]:
    """ANP's search on a copy of ``model``; returns the final mask of every BatchNorm, ``{bn name: (C,)}``. Each
    batch draws ``batch_size`` images with replacement (the official ``RandomSampler(replacement=True)``). With
    ``checkpoint`` (a path) it saves its state every ``ANP_CHECKPOINT_EVERY`` iterations and resumes from there with
    the same random stream. fp32 throughout, as ANP's code (no autocast: the masks move by small steps)."""
    n, device = images.shape[0], images.device
    net, layers = _search_copy(model, device)
    mask_opt = torch.optim.SGD([w.mask for w in layers.values()], lr=cfg.mask_lr, momentum=0.9)
    every = ANP_CHECKPOINT_EVERY  # a chunk of iterations is the checkpoint's "epoch"
    key = artifact_key("anp_checkpoint", {"cfg": cfg, "n": n, "every": every}, VERSION)
    ckpt = EpochCheckpoint(checkpoint, key, 1, -(-cfg.iterations // every), device, data=(images, labels))
    saved = ckpt.resume(net, mask_opt, gen)
    start = saved["epoch"] * every if saved is not None else 0
    for iteration in range(start, cfg.iterations):
        idx = torch.randint(n, (cfg.batch_size,), generator=gen, device=device)
        x, y = model_input(augment(to_float(images[idx]), cfg.augmentation, gen)), labels[idx]
        mask_step(net, layers, x, y, cfg, mask_opt, gen)
        if (iteration + 1) % every == 0:
            ckpt.after_epoch((iteration + 1) // every, net, mask_opt, gen)
    return {name: w.mask.detach().cpu().clone() for name, w in layers.items()}


@torch.no_grad()
def prune_by_threshold(model: nn.Module, masks: dict[str, torch.Tensor], threshold: float) -> int:
    """Zero the γ of every BatchNorm neuron whose mask, at the official code's 4 decimals, is at most
    ``threshold``; returns how many."""
    modules = dict(model.named_modules())
    count = 0
    for name, m in masks.items():
        idx = torch.nonzero(torch.round(m.double(), decimals=MASK_DECIMALS) <= threshold).flatten()
        modules[name].weight[idx.to(modules[name].weight.device)] = 0
        count += idx.numel()
    return count


def sweep_thresholds(cfg: ANPConfig) -> list[float]:
    """BackdoorBench's thresholds, ``np.arange(0, pruning_max + pruning_step, pruning_step)`` (0, 0.05, ..., 0.9),
    at 4 decimals (the masks' precision, so the pruned sets are the official ones)."""
    return [round(float(t), MASK_DECIMALS) for t in np.arange(0, cfg.pruning_max + cfg.pruning_step, cfg.pruning_step)]


@torch.no_grad()
def threshold_sweep(model: nn.Module, masks: dict[str, torch.Tensor], cfg: ANPConfig, holdout,
                    evaluate=None) -> list[dict]:
    """Prune a copy of ``model`` at each swept threshold in turn (the pruned sets grow with it; nothing is
    retrained) and measure it: the clean-subset accuracy (``holdout_ACC``), and with ``evaluate`` (an
    :class:`~backdoor_repro.evaluation.AttackEvaluator`) the test metrics. The first row is the unpruned model
    (``threshold`` None)."""
    net = copy.deepcopy(model).eval()
    labels = holdout.labels.to(next(net.parameters()).device)
    rows = []
    for t in [None, *sweep_thresholds(cfg)]:
        row = {"threshold": t, "pruned": 0 if t is None else prune_by_threshold(net, masks, t),
               "holdout_ACC": metrics.accuracy(predict(net, holdout.images), labels)}
        rows.append({**row, **(evaluate(net) if evaluate is not None else {})})
    return rows


def _within(acc: float, base: float, acc_ratio: float) -> bool:
    """BackdoorBench's tolerance: ``|acc - base| / base < acc_ratio``."""
    return base > 0 and abs(acc - base) / base < acc_ratio


def holdout_threshold(sweep: list[dict], acc_ratio: float) -> float | None:
    """The rule that never looks at the test set: the largest swept threshold whose clean-subset accuracy stays
    within ``acc_ratio`` of the unpruned model's (None, nothing pruned, if none does)."""
    base = sweep[0]["holdout_ACC"]
    kept = [r["threshold"] for r in sweep[1:] if _within(r["holdout_ACC"], base, acc_ratio)]
    return max(kept) if kept else None


def oracle_threshold(sweep: list[dict], acc_ratio: float) -> dict:
    """BackdoorBench's choice (``evaluate_by_threshold``), which reads the test set: from the unpruned model, in
    increasing threshold, a threshold replaces the kept one where its test accuracy is within ``acc_ratio`` of the
    unpruned model's and its test ASR is strictly lower. Its sweep row; ``{}`` without test metrics."""
    if not sweep or "ASR" not in sweep[0]:
        return {}
    best = sweep[0]
    for row in sweep[1:]:
        if _within(row["ACC"], sweep[0]["ACC"], acc_ratio) and row["ASR"] < best["ASR"]:
            best = row
    return best


_ANP_COMMON = (
    "the pruning threshold is chosen without the test set: the largest of BackdoorBench's swept thresholds (0 to "
    "0.9 by 0.05) whose clean-subset accuracy stays within acc_ratio 0.1 of the unpruned model's. BackdoorBench "
    "keeps the threshold of lowest test ASR among those within acc_ratio of the unpruned test accuracy "
    "(SCLBD/BackdoorBench#35); that choice is shown beside ours, labelled as test-selected",
    "why this rule: it keeps BackdoorBench's sweep and accuracy tolerance and moves them onto the data the defender "
    "holds, as FP's pruning here does; the pruned sets grow with the threshold, so the most pruning the tolerance "
    "allows stands in for the lowest ASR, which would need the trigger. A fixed 0.2 (the value commonly cited from "
    "the ANP paper) goes with ANP's own search (mask lr 0.2 on 1 % of the data), not with BackdoorBench's (lr "
    "0.01). The clean subset is part of the training set, so its accuracy can stay within the tolerance where the "
    "test accuracy would not",
    "noise and batch draws from a seeded torch generator (official: torch's global stream)",
)
ANP_PROFILES = {"paper": ANPConfig(), "fast": ANPConfig(), "cpu": ANPConfig(iterations=1000),
                "smoke": ANPConfig(iterations=60)}
ANP_DEVIATIONS = {"paper": _ANP_COMMON + PROTOCOL_DEVIATIONS["paper"],
                  "cpu": _ANP_COMMON + PROTOCOL_DEVIATIONS["paper"] + PROTOCOL_DEVIATIONS["cpu"] + (
                      "1,000 mask iterations (BackdoorBench: 2,000): about 16 min per attack on 2 cores at width 8",),
                  "fast": _ANP_COMMON + PROTOCOL_DEVIATIONS["paper"] + PROTOCOL_DEVIATIONS["fast"],
                  "smoke": _ANP_COMMON + PROTOCOL_DEVIATIONS["smoke"] + (
                      "60 mask iterations (BackdoorBench: 2,000), on a width-8 network (424 BatchNorm neurons)",)}


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
            evaluate = AttackEvaluator(evaluated_attack(spec, cache), data.test) if data.test is not None else None
            sweep = threshold_sweep(model, masks, cfg, holdout, evaluate)
            threshold = cfg.threshold if cfg.threshold is not None else holdout_threshold(sweep, cfg.acc_ratio)
            pruned = 0 if threshold is None else prune_by_threshold(model, masks, threshold)
            return StageOutput(model.eval(), sweep, {"masks": masks, "pruned": pruned, "threshold": threshold})

        stage = Stage("anp", cfg, VERSION, (spec.no_defense_stage(), spec.granted_stage()))
        model, record = cached_stage(cache, stage, build, spec.new_model, device, evaluated_on=data.test)
        return DefenseResult(model, {"no_defense": nd, "anp": record})


register_defense(ANP())
