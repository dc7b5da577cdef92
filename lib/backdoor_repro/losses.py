"""Losses of DBD (Huang et al., ICLR 2022; official code SCLBD/DBD) and Trap-and-Replace (NeurIPS 2022), as pure
torch functions.

* :func:`symmetric_cross_entropy` — SCE used in DBD's warm-up stage and to rank samples (``reduction="none"``).
* :func:`simclr_loss_dbd` — DBD's *asymmetric* SimCLR loss (only view-1 embeddings are anchors).
* :func:`sharpen`, :func:`mixmatch_mix`, :func:`mixmatch_losses`, :func:`linear_rampup` — the MixMatch
  pieces (YU1ut/MixMatch-pytorch style) used by DBD's semi-supervised fine-tuning stage.
* :func:`total_variation` — T&R's TV penalty on the reconstruction; :func:`label_smoothing_cross_entropy` —
  timm's ``LabelSmoothingCrossEntropy`` used by T&R's head replacement.
* :func:`intra_class_separation` (FCT's L_intra), :func:`supcon_loss` (SupCon with FCT's SS-CTL masks) and
  :func:`mixed_cross_entropy` (FCT's classifier loss) — FCT's D-ST / SD module (SCLBD/Effective_backdoor_defense).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F


def in_fp32(loss):
    """Compute ``loss`` with autocast off and half-precision inputs cast up to fp32: under bf16 autocast a matmul
    recasts even ``.float()`` inputs to bf16, and a similarity at temperature 0.1 would carry bf16's rounding (about
    0.4 %) tenfold into the logits. On fp32 or fp64 inputs outside autocast (every CPU run) this changes nothing."""
    @functools.wraps(loss)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        args = tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype in (torch.bfloat16, torch.float16) else a
                     for a in args)
        with torch.autocast(device_type=device, enabled=False):
            return loss(*args, **kwargs)
    return wrapper


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Float one-hot rows by scatter (``F.one_hot`` checks the label range, a host sync on CUDA)."""
    out = torch.zeros(labels.shape[0], num_classes, device=labels.device)
    return out.scatter_(1, labels.view(-1, 1), 1.0)


def symmetric_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.1, beta: float = 1.0,
                            reduction: str = "mean") -> torch.Tensor:
    """SCE = ``alpha``·CE + ``beta``·RCE (Wang et al., 2019, as in DBD's ``SCELoss``).

    RCE = −Σ_k p_k·log(clamp(onehot_k, 1e-4, 1)) with p = softmax(logits) clamped to [1e-7, 1], i.e.
    ≈ −log(1e-4)·(1 − p_y) ≈ 9.21·(1 − p_y). ``reduction`` is ``"mean"`` or ``"none"`` (per-sample values).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    ce = F.cross_entropy(logits, targets, reduction="none")
    p = F.softmax(logits, dim=1).clamp(min=1e-7, max=1.0)
    onehot = one_hot(targets, logits.shape[1]).to(p.dtype).clamp(min=1e-4, max=1.0)
    rce = -(p * torch.log(onehot)).sum(dim=1)
    loss = alpha * ce + beta * rce
    return loss.mean() if reduction == "mean" else loss


@in_fp32
def simclr_loss_dbd(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """DBD's asymmetric SimCLR loss on ``(b, d)`` embeddings of view 1 (``z1``) and view 2 (``z2``).

    The caller must L2-normalise ``z1`` and ``z2`` (rows of unit norm); this function does not.
    Only the b view-1 rows are anchors. Anchor i is scored against all 2b embeddings except itself
    (the b−1 other view-1 rows and all b view-2 rows) by dot product / ``temperature``; its positive is
    ``z2[i]``. Returns the mean over anchors of −log softmax(similarities)[positive]. This is *not* the
    symmetric NT-Xent (which would also use the view-2 rows as anchors).
    """
    b = z1.shape[0]
    sim = z1 @ torch.cat([z1, z2], dim=0).T / temperature          # (b, 2b)
    self_mask = torch.zeros_like(sim, dtype=torch.bool)
    self_mask[:, :b] = torch.eye(b, dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    positives = torch.arange(b, device=sim.device) + b
    return F.cross_entropy(sim, positives)


def sharpen(p: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Raise class probabilities ``p`` (…, C) to 1/``temperature`` and renormalise over the last dim."""
    pt = p ** (1.0 / temperature)
    return pt / pt.sum(dim=-1, keepdim=True)


def mix_coefficient(alpha: float, rng: np.random.Generator) -> float:
    """MixMatch's MixUp λ: λ ~ Beta(``alpha``, ``alpha``) from the numpy ``rng``, then λ = max(λ, 1 − λ)."""
    lam = float(rng.beta(alpha, alpha))
    return max(lam, 1.0 - lam)


def mixmatch_mix(inputs: torch.Tensor, targets: torch.Tensor, alpha: float, rng: np.random.Generator,
                 gen: torch.Generator | None = None, lam=None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """MixUp over the whole concatenated MixMatch batch.

    λ ~ Beta(``alpha``, ``alpha``) then λ = max(λ, 1 − λ) (so λ ≥ 0.5), drawn from the numpy ``rng``
    (torch has no generator-aware Beta sampler; λ is a host scalar, so no device sync). One permutation
    of the batch, drawn on the inputs' device from ``gen`` (no host-to-device copy per step); without
    ``gen`` it comes from ``rng``. Returns ``(λ·x + (1−λ)·x[perm], λ·t + (1−λ)·t[perm], λ)``; ``targets``
    are soft labels (N, C). ``lam``: a λ drawn ahead by :func:`mix_coefficient` (a float, or a 0-dim device
    tensor so that the step has no per-step host scalar); none is then drawn here.
    """
    if lam is None:
        lam = mix_coefficient(alpha, rng)
    if gen is not None:
        perm = torch.randperm(inputs.shape[0], device=inputs.device, generator=gen)
    else:
        perm = torch.as_tensor(rng.permutation(inputs.shape[0]), device=inputs.device)
    mixed_x = lam * inputs + (1.0 - lam) * inputs[perm]
    mixed_t = lam * targets + (1.0 - lam) * targets[perm.to(targets.device)]
    return mixed_x, mixed_t, lam


def mixmatch_losses(logits_x: torch.Tensor, targets_x: torch.Tensor, logits_u: torch.Tensor,
                    targets_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch's ``SemiLoss`` without the weight: returns ``(Lx, Lu)``.

    Lx = mean over samples of −Σ_k targets_x·log_softmax(logits_x) (soft-target cross-entropy);
    Lu = mean over samples *and* classes of (softmax(logits_u) − targets_u)².
    """
    lx = -(targets_x * F.log_softmax(logits_x, dim=1)).sum(dim=1).mean()
    lu = ((F.softmax(logits_u, dim=1) - targets_u) ** 2).mean()
    return lx, lu


def linear_rampup(current: float, rampup_length: float) -> float:
    """clip(``current`` / ``rampup_length``, 0, 1); 1.0 when ``rampup_length`` is 0.

    DBD weights Lu by λ_u(t) = 15·linear_rampup(t, 190), t = epoch index + batch_idx / iterations_per_epoch.
    """
    if rampup_length == 0:
        return 1.0
    return float(np.clip(current / rampup_length, 0.0, 1.0))


def total_variation(img: torch.Tensor) -> torch.Tensor:
    """T&R ``total_variation_loss``: (Σ squared vertical + Σ squared horizontal neighbour differences) / (B·C·H·W)."""
    tv_h = (img[:, :, 1:, :] - img[:, :, :-1, :]).pow(2).sum()
    tv_w = (img[:, :, :, 1:] - img[:, :, :, :-1]).pow(2).sum()
    return (tv_h + tv_w) / img.numel()


def label_smoothing_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.1,
                                  reduction: str = "mean") -> torch.Tensor:
    """timm's ``LabelSmoothingCrossEntropy``: ``(1 − ε)·NLL(y) + ε·mean_k(−log p_k)`` per sample."""
    logp = F.log_softmax(logits, dim=1)
    loss = (1 - smoothing) * -logp.gather(1, targets.view(-1, 1)).squeeze(1) + smoothing * -logp.mean(dim=1)
    return loss.mean() if reduction == "mean" else loss


FLAG_CLEAN, FLAG_UNCERTAIN, FLAG_POISONED = 0, 1, 2  # FCT's sample flags (D_c, D_u, D_p)
SUPCON_MASKS = ("simclr", "supervised", "code", "symmetric")


@in_fp32
def intra_class_separation(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """FCT's L_intra: the mean feature of every class present in the batch, L2-normalised; the mean of their
    C × C cosine-similarity matrix with a zeroed diagonal (zeros included in the mean)."""
    present = torch.bincount(labels, minlength=num_classes) > 0
    sums = torch.zeros(num_classes, features.shape[1], device=features.device, dtype=features.dtype)
    sums = sums.index_add(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).to(features.dtype)
    centers = F.normalize((sums / counts[:, None])[present], dim=1)
    similarity = centers @ centers.T
    similarity = similarity * (1 - torch.eye(similarity.shape[0], device=features.device, dtype=features.dtype))
    return similarity.mean()


def supcon_positive_mask(labels: torch.Tensor, flags: torch.Tensor | None, mode: str) -> torch.Tensor:
    """The ``(B, B)`` positive mask of SupCon before the two views are tiled (entry i, j = 1: sample j's views are
    positives of anchor i; the anchor's own view is dropped later).

    ``simclr`` (CTL): only itself. ``supervised`` (S-CTL): same label. ``code`` (SS-CTL as FCT's code): same label,
    but the rows of non-clean anchors (D_p, D_u) keep only themselves, so a clean anchor still attracts same-label
    non-clean samples. ``symmetric``: also drop non-clean samples from clean anchors' positives.
    """
    if mode not in SUPCON_MASKS:
        raise ValueError(f"unknown SupCon mask {mode!r}; choose from {', '.join(SUPCON_MASKS)}")
    eye = torch.eye(labels.shape[0], device=labels.device)
    if mode == "simclr":
        return eye
    mask = (labels[:, None] == labels[None, :]).float()
    if mode == "supervised":
        return mask
    nonclean = (flags != FLAG_CLEAN).float()
    mask = mask * (1 - nonclean[:, None]) + eye * nonclean[:, None]
    if mode == "symmetric":
        mask = mask * (1 - nonclean[None, :]) + eye * nonclean[None, :]
    return mask


@in_fp32
def supcon_loss(z1: torch.Tensor, z2: torch.Tensor, mask: torch.Tensor, temperature: float = 0.1,
                base_temperature: float = 0.07) -> torch.Tensor:
    """SupCon ("all" mode) on L2-normalised views ``z1``, ``z2`` of ``(B, d)`` with the ``(B, B)`` positive ``mask``:
    every one of the 2B views is an anchor against the other 2B − 1; its loss is the mean log-probability of its
    positives (the tiled mask without itself), scaled by −temperature / base_temperature; mean over anchors."""
    b = z1.shape[0]
    features = torch.cat([z1, z2])
    logits = features @ features.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = 1 - torch.eye(2 * b, device=features.device)
    positives = mask.repeat(2, 2) * not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    mean_log_prob_pos = (positives * log_prob).sum(1) / positives.sum(1)
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, flags: torch.Tensor,
                        lambda_p: float = 0.001) -> torch.Tensor:
    """FCT's classifier loss: CE over the batch's D_c samples − λ_p · CE over its D_p samples (each a mean). A
    batch without D_p samples (the official code gives NaN) uses the D_c term alone; one without D_c, the D_p term."""
    clean, poisoned = (flags == FLAG_CLEAN).float(), (flags == FLAG_POISONED).float()
    per_sample = F.cross_entropy(logits, labels, reduction="none")
    clean_term = (per_sample * clean).sum() / clean.sum().clamp(min=1)  # masked means: no host sync
    poisoned_term = (per_sample * poisoned).sum() / poisoned.sum().clamp(min=1)
    return clean_term - lambda_p * poisoned_term
