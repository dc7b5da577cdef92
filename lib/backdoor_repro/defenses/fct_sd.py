"""FCT's sample-distinguishment (SD) module, shared by D-ST and D-BR (Chen, Wu, Wang, NeurIPS 2022).

As the official code runs it (SCLBD/Effective_backdoor_defense @ 63fda0e): a fresh auxiliary network is trained
on the poisoned set for 2 epochs without augmentation (SD-1, ``train_attack_noTrans.py``), then 10 more epochs
with the intra-class separation loss L_intra, continuing the same optimiser and cosine schedule (SD-2,
``finetune_attack_noTrans.py``). The FCT score of a training image is the mean squared change of the network's
pooled feature when the image is rotated and shifted (τ; SD-3). Thresholds come from the sorted scores (SD-4);
membership from a second pass with fresh τ draws (SD-5, ``separate_samples.py``): FCT ≤ γ_c → D_c, else
FCT ≥ γ_p → D_p, else D_u, in that order, so a score that meets both thresholds (γ_c ≥ γ_p, as when most scores are
exactly 0) goes to D_c. The ``rank`` split (an option) takes exactly the lowest α_c and highest α_p of one pass
instead; the collapse guard ``rank_if_ties_above`` (an option, off by default) falls back to it when many scores tie.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..augment import rotate_translate
from ..cache import ArtifactCache
from ..losses import FLAG_CLEAN, FLAG_POISONED, FLAG_UNCERTAIN, intra_class_separation
from ..graph import Stage
from ..pipeline import RunData, check_run_data
from ..spec import RunSpec
from ..stages import StageOutput, cached_stage
from ..train import Objective, TrainConfig, batched_outputs, train_model

SD_VERSION = 3  # the stage's code version: bump it when the code changes what the stage computes
SPLITS = ("two_pass", "rank")


@dataclass(frozen=True)
class SDConfig:
    warmup_epochs: int = 2  # SD-1: cross-entropy, no augmentation
    intra_epochs: int = 10  # SD-2: L_intra, same optimiser and schedule
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule_epochs: int = 100  # CosineAnnealingLR(T_max=100), stepped per epoch, over both phases
    alpha_c: float = 0.20  # share of samples below γ_c (D_c)
    alpha_p: float = 0.05  # share above γ_p (D_p)
    degrees: float = 180.0  # τ: RandomRotation(180)...
    translate: float = 0.2  # ...then RandomAffine(0, translate=(0.2, 0.2))
    split: str = "two_pass"
    # an optional guard against the FCT collapse users of the code report (many scores exactly equal, e.g. 0): when
    # more than this share of the first pass ties at γ_c or γ_p, the split is by rank, ties by index. None (the
    # default, as the official code): never, the two-pass split keeps every tie
    rank_if_ties_above: float | None = None

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.rank_if_ties_above is not None and not 0 <= self.rank_if_ties_above < 1:
            raise ValueError(f"rank_if_ties_above must be in [0, 1) or None, got {self.rank_if_ties_above}")
        if not (0 < self.alpha_c < 1 and 0 < self.alpha_p < 1 and self.alpha_c + self.alpha_p <= 1):
            raise ValueError(f"alpha_c and alpha_p must be in (0, 1) with a sum <= 1, got {self.alpha_c}, {self.alpha_p}")

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.warmup_epochs + self.intra_epochs, batch_size=self.batch_size, lr=self.lr,
                           momentum=self.momentum, weight_decay=self.weight_decay, schedule="cosine_epoch",
                           schedule_epochs=self.schedule_epochs, augmentation="none", seed=seed)


class SDObjective(Objective):
    """Cross-entropy for the first ``warmup_epochs``, then L_intra on the pooled features (poisoned labels). The
    official L_intra step runs the whole network once before the feature forward, so BatchNorm statistics update
    twice per step; that forward is kept."""

    def __init__(self, warmup_epochs: int, num_classes: int):
        self.warmup_epochs, self.num_classes, self.intra = warmup_epochs, num_classes, False

    def start_epoch(self, epoch: int) -> None:
        self.intra = epoch >= self.warmup_epochs

    def loss(self, model, x, y, gen, idx):
        logits = model(x)
        if not self.intra:
            return F.cross_entropy(logits.float(), y), logits
        return intra_class_separation(model.features(x).float(), y, self.num_classes), logits


@torch.no_grad()
def fct_scores(model, images: torch.Tensor, cfg: SDConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(FCT per image, L2 norm of its pooled feature)``: FCT = mean over feature dimensions of (f(x) − f(τ(x)))²,
    in eval mode, one τ draw per image."""
    model.eval()

    def score(x):
        f = model.features(x).float()
        ft = model.features(rotate_translate(x, gen, cfg.degrees, cfg.translate)).float()
        return torch.stack([((f - ft) ** 2).mean(1), f.norm(dim=1)], 1)

    out = batched_outputs(score, images, images.device, batch_size=1000)
    return out[:, 0], out[:, 1]


def tied_share(first: torch.Tensor, gamma_c: float, gamma_p: float) -> float:
    """The share of first-pass scores tied with a threshold, besides the score that is the threshold: the larger of
    the two (0 to 1; 0 when every score is distinct)."""
    n = first.shape[0]
    return max(float((first == g).sum() - 1) / n for g in (gamma_c, gamma_p))


def split_used(first: torch.Tensor, gamma_c: float, gamma_p: float, cfg: SDConfig) -> str:
    """``cfg.split``, or ``rank`` when the guard is on and the two-pass split would cut through more ties than it
    allows."""
    if cfg.split == "two_pass" and cfg.rank_if_ties_above is not None \
            and tied_share(first, gamma_c, gamma_p) > cfg.rank_if_ties_above:
        return "rank"
    return cfg.split


def split_samples(first: torch.Tensor, second: torch.Tensor, cfg: SDConfig) -> tuple[torch.Tensor, float, float]:
    """``(flags, γ_c, γ_p)``: flags 0 (D_c), 1 (D_u), 2 (D_p). Thresholds from the sorted first-pass scores at
    ``int(α_c N)`` and ``N − int(α_p N)`` (``calculate_gamma.py``); membership from the second pass (``two_pass``,
    ``separate_samples.py``: ≤ γ_c → D_c, else ≥ γ_p → D_p, else D_u; a score meeting both goes to D_c) or exactly
    the lowest / highest shares of the first pass, ties by index (``rank``, also the two-pass split's fallback when
    the optional guard is on and more than ``rank_if_ties_above`` of the scores tie at a threshold:
    :func:`split_used`)."""
    n = first.shape[0]
    ordered = torch.sort(first).values
    gamma_c, gamma_p = float(ordered[int(n * cfg.alpha_c)]), float(ordered[n - int(n * cfg.alpha_p)])
    flags = torch.full((n,), FLAG_UNCERTAIN, dtype=torch.int8, device=first.device)
    if split_used(first, gamma_c, gamma_p, cfg) == "two_pass":
        flags[second >= gamma_p] = FLAG_POISONED
        flags[second <= gamma_c] = FLAG_CLEAN  # the code tests γ_c first: D_c wins where both hold
    else:
        order = torch.sort(first, stable=True).indices
        flags[order[:int(n * cfg.alpha_c)]] = FLAG_CLEAN
        flags[order[n - int(n * cfg.alpha_p):]] = FLAG_POISONED
    return flags, gamma_c, gamma_p


def split_quality(flags: torch.Tensor, poison_mask: torch.Tensor) -> dict:
    """D_c purity (share of truly clean samples in it), D_p precision and recall (poisoned samples found), sizes."""
    flags, poisoned = flags.cpu(), poison_mask.cpu().bool()
    clean_set, poison_set = flags == FLAG_CLEAN, flags == FLAG_POISONED

    def pct(a, b):
        return 100.0 * int(a) / int(b) if int(b) else float("nan")

    return {"D_c size": int(clean_set.sum()), "D_u size": int((flags == FLAG_UNCERTAIN).sum()),
            "D_p size": int(poison_set.sum()), "D_c purity": pct((clean_set & ~poisoned).sum(), clean_set.sum()),
            "D_p precision": pct((poison_set & poisoned).sum(), poison_set.sum()),
            "D_p recall": pct((poison_set & poisoned).sum(), poisoned.sum())}


def sd_stage(spec: RunSpec, data: RunData, cfg: SDConfig, cache: ArtifactCache, progress: bool = False):
    """SD-1 to SD-5 on the poisoned training set. Returns ``(auxiliary network, StageRecord)``; the extras hold
    the two passes' scores, the flags, the thresholds and the feature-norm diagnostics."""
    check_run_data(spec, data)
    device = data.train.images.device

    def make():
        return spec.new_model()

    def build(partial):
        torch.manual_seed(spec.seed)
        model = make()
        result = train_model(model, data.train.images, data.train.labels, cfg.train_config(spec.seed),
                                  checkpoint=partial, progress=progress, desc="fct-sd",
                                  objective=SDObjective(cfg.warmup_epochs, spec.num_classes))
        gen = torch.Generator(device=device).manual_seed(spec.seed + 1)
        first, norms = fct_scores(model, data.train.images, cfg, gen)
        second, _ = fct_scores(model, data.train.images, cfg, gen)
        flags, gamma_c, gamma_p = split_samples(first, second, cfg)
        extras = {"scores": first.cpu(), "scores_second_pass": second.cpu(), "flags": flags.cpu(),
                  "gamma_c": gamma_c, "gamma_p": gamma_p, "feature_norms": norms.cpu(),
                  "feature_norm_mean": float(norms.mean()),
                  "zero_score_share": 100.0 * float((first == 0).float().mean()),
                  "tied_share": 100.0 * tied_share(first, gamma_c, gamma_p),
                  "split_used": split_used(first, gamma_c, gamma_p, cfg)}
        return StageOutput(model, result.history, extras)

    return cached_stage(cache, sd_graph(spec, cfg), build, make, device)


def sd_graph(spec: RunSpec, cfg: SDConfig) -> Stage:
    """Sample distinguishment: trained on the granted data in the model context."""
    return Stage("fct_sd", cfg, SD_VERSION, spec.training_parents())
