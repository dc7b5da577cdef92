"""DBD — Backdoor Defense via Decoupling the Training Process (Huang et al., ICLR 2022).

Each stage is a cached artifact keyed by the poisoned data it saw and its own config, so the ablations
reuse them: the SimCLR backbone serves the CE-head, SCE-head, supervised-tuning and full-DBD rows.
Per-profile settings and every deviation from the official code (SCLBD/DBD @ d372ef4) are in
:data:`DBD_PROFILES` and :data:`DBD_DEVIATIONS`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import torch

from ..attacks import get_attack
from ..cache import ArtifactCache
from ..data import ImageSet
from ..evaluation import AttackEvaluator
from ..models import build_model
from ..pipeline import ModelSpec, poisoned_training_set, supervised_model
from .dbd_stages import (FinetuneConfig, HeadConfig, SelfSupervised, SimCLRConfig, finetune, train_head,
                         train_simclr)

VERSIONS = {"simclr": 1, "head": 1, "finetune": 1}
BACKBONES = ("simclr", "supervised")


@dataclass(frozen=True)
class DBDConfig:
    simclr: SimCLRConfig = SimCLRConfig()
    head: HeadConfig = HeadConfig()
    finetune: FinetuneConfig = FinetuneConfig()

    def with_(self, simclr=None, head=None, finetune=None) -> "DBDConfig":
        return DBDConfig(replace(self.simclr, **(simclr or {})), replace(self.head, **(head or {})),
                         replace(self.finetune, **(finetune or {})))


DBD_PROFILES = {
    "paper": DBDConfig(),
    "fast": DBDConfig(finetune=FinetuneConfig(epochs=40, iterations=256, rampup_epochs=0.95 * 50)),
    "smoke": DBDConfig(SimCLRConfig(epochs=6, schedule_epochs=60, batch_size=256),
                       HeadConfig(epochs=10),
                       FinetuneConfig(epochs=3, iterations=48, rampup_epochs=0.95 * 13)),
}

_COMMON = (
    "SimCLR views are augmented on the device in batches: bilinear instead of bicubic resized crop, a fixed "
    "colour-jitter order, a truncated Gaussian kernel instead of PIL's blur (views.py)",
    "MixMatch label guessing and mixing use our own random streams (numpy for Beta and the permutation)",
)
DBD_DEVIATIONS = {
    "paper": _COMMON + ("bf16 autocast on CUDA (official: fp32)",),
    "fast": _COMMON + (
        "MixMatch 40 epochs x 256 iterations instead of 190 x 1,024; the lambda_u ramp is rescaled to the "
        "shortened run (reaches 15 at 95% of it, as 190 of 200 epochs in the official code) while the 10 "
        "warm-up epochs still count, so lambda_u starts at 3.2 instead of 0.79",
        "bf16 autocast on CUDA (official: fp32)"),
    "smoke": _COMMON + (
        "SimCLR 6 epochs of a 60-epoch cosine schedule at batch 256 (official: 100 of 1,000 at batch 512)",
        "MixMatch 3 epochs x 48 iterations (official: 190 x 1,024), lambda_u ramp rescaled",
        "ResNet-18 width 8 on 5,000 images: features are weak, so accuracy is low for every row"),
}


def _data_key(spec: ModelSpec, seed: int) -> dict:
    """What decides the poisoned training set, plus the training seed. The supervised schedule is left
    out, except for label-consistent attacks, whose PGD images come from a clean model trained with it."""
    key = asdict(spec)
    train = key.pop("train")
    if get_attack(spec.attack).needs_adversary:
        key["poisoning_clean_model"] = train
    key["seed"] = seed
    return key


def simclr_backbone(spec: ModelSpec, train: ImageSet, cfg: SimCLRConfig, seed: int, cache: ArtifactCache):
    """Stage 1 on the poisoned training images (labels unused). Returns ``(backbone, record)``."""
    def build(_partial):
        images = poisoned_training_set(spec, train, cache).images
        torch.manual_seed(seed)  # after poisoning, which may train a clean model for label-consistent PGD
        clf = build_model(spec.model, spec.num_classes, spec.width)
        model = SelfSupervised(clf.backbone, clf.normalize, cfg.projection_dim)
        started = time.perf_counter()
        history = train_simclr(model, images, cfg, seed)
        return {"backbone": clf.backbone.state_dict(), "history": history, "seconds": time.perf_counter() - started}

    stored = cache.get_or_build("dbd_simclr", {"data": _data_key(spec, seed), "simclr": cfg}, VERSIONS["simclr"], build)
    backbone = build_model(spec.model, spec.num_classes, spec.width).backbone
    backbone.load_state_dict(stored["backbone"])
    return backbone, {k: v for k, v in stored.items() if k != "backbone"}


def _initial_model(spec, train, cfg: DBDConfig, seed, cache, backbone: str):
    model = build_model(spec.model, spec.num_classes, spec.width)
    torch.manual_seed(seed)
    model.head.reset_parameters()
    if backbone == "simclr":
        model.backbone.load_state_dict(simclr_backbone(spec, train, cfg.simclr, seed, cache)[0].state_dict())
    else:  # ablation "without SS": the No-Defense model's backbone
        model.backbone.load_state_dict(supervised_model(spec, train, cache=cache, progress=False)[0].backbone.state_dict())
    return model


def head_stage(spec, train, cfg: DBDConfig, seed: int, cache: ArtifactCache, backbone: str = "simclr"):
    """Stage 2: linear head on the frozen backbone. Returns ``(model, optimizer_state, record)``."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}")
    device = train.images.device
    key = {"data": _data_key(spec, seed), "backbone": backbone, "simclr": cfg.simclr, "head": cfg.head,
           "supervised": spec.train if backbone == "supervised" else None}

    def build(_partial):
        model = _initial_model(spec, train, cfg, seed, cache, backbone).to(device)
        poisoned = poisoned_training_set(spec, train, cache)
        started = time.perf_counter()
        history, opt = train_head(model, poisoned.images, poisoned.labels, cfg.head, seed)
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                "seconds": time.perf_counter() - started}

    stored = cache.get_or_build("dbd_head", key, VERSIONS["head"], build)
    model = build_model(spec.model, spec.num_classes, spec.width)
    model.load_state_dict(stored["model"])
    return model.to(device).eval(), stored["optimizer"], {k: v for k, v in stored.items() if k not in ("model", "optimizer")}


def finetune_stage(spec, train, test, cfg: DBDConfig, seed: int, cache: ArtifactCache, backbone: str = "simclr"):
    """Stage 3 (full DBD with ``cfg.finetune.mode == "mixmatch"``). Returns ``(model, record)``."""
    device = train.images.device
    key = {"data": _data_key(spec, seed), "backbone": backbone, "simclr": cfg.simclr, "head": cfg.head,
           "finetune": cfg.finetune, "supervised": spec.train if backbone == "supervised" else None}
    attack = get_attack(spec.attack, data_seed=spec.data_seed, **spec.attack_overrides)

    def build(_partial):
        model, opt_state, _ = head_stage(spec, train, cfg, seed, cache, backbone)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.head.lr)
        opt.load_state_dict(opt_state)
        poisoned = poisoned_training_set(spec, train, cache)
        evaluate = AttackEvaluator(attack, test) if test is not None else None
        started = time.perf_counter()
        history = finetune(model, opt, poisoned.images, poisoned.labels, poisoned.poison_mask, cfg.head,
                           cfg.finetune, seed, warmup_epochs=cfg.head.epochs, evaluate=evaluate)
        return {"model": model.state_dict(), "history": history, "seconds": time.perf_counter() - started}

    stored = cache.get_or_build("dbd_finetune", key, VERSIONS["finetune"], build)
    model = build_model(spec.model, spec.num_classes, spec.width)
    model.load_state_dict(stored["model"])
    return model.to(device).eval(), {k: v for k, v in stored.items() if k != "model"}
