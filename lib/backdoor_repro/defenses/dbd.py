"""DBD — Backdoor Defense via Decoupling the Training Process (Huang et al., ICLR 2022), as a registered defense.

Each stage is a cached artifact keyed by the poisoned data it saw (``RunSpec.training_key``) and the
configs of that stage and the ones before it, so the ablations reuse them: one SimCLR backbone serves the
CE-head, SCE-head, supervised-tuning and full-DBD rows; "without SS" reuses the No-Defense model.
Per-profile settings and every deviation from the official code (SCLBD/DBD @ d372ef4) are in
:data:`DBD_PROFILES` and :data:`DBD_DEVIATIONS`; the ablation rows are configs (:func:`dbd_ablation`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..cache import ArtifactCache
from ..evaluation import AttackEvaluator
from ..fast_step import adam, load_optimizer_state
from ..pipeline import RunData, check_run_data, supervised_model
from ..spec import RunSpec
from ..stages import StageOutput, cached_stage
from .base import Defense, DefenseResult, register_defense
from .dbd_stages import (FinetuneConfig, HeadConfig, SelfSupervised, SimCLRConfig, finetune, train_head,
                         train_simclr)

VERSIONS = {"simclr": 2, "head": 2, "finetune": 2}  # 2: RunSpec keys, one SimCLR forward over both views
BACKBONES = ("simclr", "supervised")
STOP_AFTER = ("head", "finetune")


@dataclass(frozen=True)
class DBDConfig:
    simclr: SimCLRConfig = SimCLRConfig()
    head: HeadConfig = HeadConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    backbone: str = "simclr"  # "supervised": the ablation "without SS" (the No-Defense model's backbone)
    stop_after: str = "finetune"  # "head": the ablations that stop after the linear head

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.stop_after not in STOP_AFTER:
            raise ValueError(f"stop_after must be one of {STOP_AFTER}, got {self.stop_after!r}")

    def with_(self, simclr=None, head=None, finetune=None, **top) -> "DBDConfig":
        return replace(self, simclr=replace(self.simclr, **(simclr or {})), head=replace(self.head, **(head or {})),
                       finetune=replace(self.finetune, **(finetune or {})), **top)


DBD_PROFILES = {
    "paper": DBDConfig(),
    "fast": DBDConfig(finetune=FinetuneConfig(epochs=40, iterations=256, rampup_epochs=0.95 * 50)),
    "smoke": DBDConfig(SimCLRConfig(epochs=6, schedule_epochs=60, batch_size=256),
                       HeadConfig(epochs=6),  # MixMatch's global epochs start after the head's: 6 + 3
                       FinetuneConfig(epochs=3, iterations=32, rampup_epochs=0.95 * (6 + 3))),
}

_COMMON = (
    "SimCLR views are augmented on the device in batches: bilinear instead of bicubic resized crop, a fixed "
    "colour-jitter order, a truncated Gaussian kernel instead of PIL's blur (views.py)",
    "MixMatch label guessing and mixing use our own random streams (numpy for Beta and the permutation)",
)
DBD_DEVIATIONS = {
    "paper": _COMMON,
    "fast": _COMMON + (
        "MixMatch 40 epochs x 256 iterations instead of 190 x 1,024; the lambda_u ramp is rescaled to the "
        "shortened run (reaches 15 at 95% of it, as 190 of 200 epochs in the official code) while the 10 "
        "warm-up epochs still count, so lambda_u starts at 3.2 instead of 0.79",
        "bf16 autocast and channels_last on CUDA (official: fp32)"),
    "smoke": _COMMON + (
        "SimCLR 6 epochs of a 60-epoch cosine schedule at batch 256 (official: 100 of 1,000 at batch 512)",
        "SCE head 6 epochs (official: 10); MixMatch 3 epochs x 32 iterations (official: 190 x 1,024), lambda_u ramp rescaled",
        "ResNet-18 width 8 on 5,000 images: features are weak, so accuracy is low for every row"),
}

# Table 1 attacks per profile (smoke: the CPU budget allows one)
DBD_TABLE1_ATTACKS = {"smoke": ("badnets_dbd_2x2",),
                      "fast": ("badnets_dbd_2x2", "blend_kitty_dbd", "wanet", "lc_dbd"),
                      "paper": ("badnets_dbd_2x2", "blend_kitty_dbd", "wanet", "lc_dbd")}


def dbd_ablation(cfg: DBDConfig) -> dict[str, DBDConfig]:
    """DBD's Table 2 rows as configs of the same defense."""
    return {
        "without SS (supervised backbone)": cfg.with_(backbone="supervised"),
        "SS + CE head": cfg.with_(head={"loss": "ce"}, stop_after="head"),
        "SS + SCE head": cfg.with_(stop_after="head"),
        "SS + SCE + supervised tuning on the credible half": cfg.with_(finetune={"mode": "supervised"}),
        "DBD (SS + SCE + MixMatch)": cfg,
    }


def _classifier(spec: RunSpec):
    return spec.new_model


def simclr_stage(spec: RunSpec, data: RunData, cfg: SimCLRConfig, cache: ArtifactCache):
    """Stage 1 on the poisoned training images (labels unused). Returns ``(backbone, StageRecord)``."""
    check_run_data(spec, data)
    def build(partial):
        torch.manual_seed(spec.seed)
        clf = spec.new_model()
        model = SelfSupervised(clf.backbone, clf.normalize, cfg.projection_dim)
        return StageOutput(clf.backbone, train_simclr(model, data.train.images, cfg, spec.seed, partial))

    return cached_stage(cache, "dbd_simclr", {"data": spec.training_key(), "simclr": cfg}, VERSIONS["simclr"],
                        build, lambda: _classifier(spec)().backbone, data.train.images.device)


def _initial_model(spec: RunSpec, data: RunData, cfg: DBDConfig, cache: ArtifactCache):
    model = _classifier(spec)()
    torch.manual_seed(spec.seed)
    model.head.reset_parameters()
    if cfg.backbone == "simclr":
        backbone, _ = simclr_stage(spec, data, cfg.simclr, cache)
    else:  # ablation "without SS": the No-Defense model's backbone
        backbone = supervised_model(spec, None, cache, progress=False, data=data)[0].backbone
    model.backbone.load_state_dict(backbone.state_dict())
    return model


def _stage_key(spec: RunSpec, cfg: DBDConfig, upto: str) -> dict:
    key = {"data": spec.training_key(), "backbone": cfg.backbone, "head": cfg.head,
           "simclr": cfg.simclr if cfg.backbone == "simclr" else None,
           "supervised": spec.supervised if cfg.backbone == "supervised" else None}
    if upto == "finetune":
        key["finetune"] = cfg.finetune
    return key


def head_stage(spec: RunSpec, data: RunData, cfg: DBDConfig, cache: ArtifactCache):
    """Stage 2: linear head on the frozen backbone. Returns ``(model, StageRecord)``; the record's extras
    hold the Adam state that stage 3 continues."""
    check_run_data(spec, data)
    def build(partial):
        model = _initial_model(spec, data, cfg, cache).to(data.train.images.device)
        history, opt = train_head(model, data.train.images, data.train.labels, cfg.head, spec.seed, partial)
        return StageOutput(model, history, {"optimizer": opt.state_dict()})

    return cached_stage(cache, "dbd_head", _stage_key(spec, cfg, "head"), VERSIONS["head"], build,
                        _classifier(spec), data.train.images.device)


def finetune_stage(spec: RunSpec, data: RunData, cfg: DBDConfig, cache: ArtifactCache):
    """Stage 3 (full DBD with ``cfg.finetune.mode == "mixmatch"``), evaluated on ``data.test`` after every
    epoch. Returns ``(model, StageRecord)``; the extras hold the last ranking's per-sample losses and credible half."""
    check_run_data(spec, data)
    def build(partial):
        model, head = head_stage(spec, data, cfg, cache)
        opt = adam(model.parameters(), cfg.head.lr, data.train.images.device)
        load_optimizer_state(opt, head.extras["optimizer"])
        evaluate = AttackEvaluator(spec.make_attack(), data.test) if data.test is not None else None
        p = data.train
        history, losses, credible = finetune(model, opt, p.images, p.labels, p.poison_mask, cfg.head, cfg.finetune,
                                             spec.seed, warmup_epochs=cfg.head.epochs, evaluate=evaluate,
                                             checkpoint=partial)
        return StageOutput(model, history, {"losses": losses.float().cpu(), "credible": credible.cpu()})

    return cached_stage(cache, "dbd_finetune", _stage_key(spec, cfg, "finetune"), VERSIONS["finetune"], build,
                        _classifier(spec), data.train.images.device, evaluated_on=data.test)


class DBD(Defense):
    key = "dbd"
    paper = "dbd"
    title = "DBD: SimCLR backbone, SCE linear head, MixMatch on the credible half"
    needs = frozenset()  # only the poisoned training set
    configs = DBD_PROFILES
    deviations = DBD_DEVIATIONS

    def shortened(self, cfg: DBDConfig) -> DBDConfig:
        return cfg.with_(simclr={"epochs": 1, "batch_size": 32}, head={"epochs": 1, "batch_size": 32},
                         finetune={"epochs": 1, "iterations": 2, "batch_size": 8})

    def run(self, spec: RunSpec, data: RunData, cfg: DBDConfig, cache: ArtifactCache | None = None,
            progress: bool = False) -> DefenseResult:
        self.check(spec, data)
        cache = cache or ArtifactCache()
        stages = {}
        if cfg.backbone == "simclr":
            stages["simclr"] = simclr_stage(spec, data, cfg.simclr, cache)[1]
        else:
            stages["no_defense"] = supervised_model(spec, None, cache, progress, data=data)[1]
        model, stages["head"] = head_stage(spec, data, cfg, cache)
        if cfg.stop_after == "head":
            return DefenseResult(model, stages)
        model, stages["finetune"] = finetune_stage(spec, data, cfg, cache)
        extras = stages["finetune"].extras
        flagged = torch.ones(len(data.train), dtype=torch.bool)
        flagged[extras["credible"]] = False  # the unlabeled (not credible) half is treated as suspect
        return DefenseResult(model, stages, suspicion=extras["losses"], flagged=flagged)


register_defense(DBD())
