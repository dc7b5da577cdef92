"""Input-aware as BackdoorBench trains it (``attack/inputaware.py``): the loop's config, one batch's composition and
the test trigger rebuilt from the trained generators. The training itself is ``attack_inputaware.py``.

Every batch pairs the shuffled clean batch ``x1`` with a batch ``x2`` of a second, independent shuffle (both with
the standard train transform). Of ``x1``: the first ``int(bs · rate)`` get their own pattern and mask and the
target label (backdoor), the next as many get the pattern and mask of the matching ``x2`` images and keep their
labels (cross), the rest stay clean. Everything happens in BackdoorBench's normalised space: the generators read the
normalised images, the pattern is normalised, and the sample is ``x + (p − x) · m`` there; our classifiers
normalise their own input, so the composed batch is mapped back to pixels before it reaches the classifier.

The quirks of the official code, each reproduced by default and switchable in :class:`InputAwareLoop`:

* ``accumulate_generator_grads`` — ``optimizerG.zero_grad()`` is never called: the generator's gradients add up
  over every batch of the whole run and Adam steps on the running sum;
* ``double_mask_forward`` — the mask step runs ``netM(inputs1)`` twice (its first output unused), so the mask
  network's BatchNorm running statistics move twice per batch on ``x1``;
* the mask stage's loss multiplies ``lambda_div`` twice (:func:`.inputaware.mask_pretraining_loss`; equal to once
  at the default ``lambda_div = 1``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..datasets import dataset_info
from .base import PlaceholderTrigger
from .inputaware import PatternGenerator, apply_pattern, diversity_loss, mask_pretraining_loss, threshold

QUIRKS = ("the generator's gradients are never zeroed (optimizerG.zero_grad() is missing): Adam steps on their sum "
          "over every batch of the run (accumulate_generator_grads=True)",
          "the mask pre-training step runs the mask network on x1 twice, so its BatchNorm statistics move twice per "
          "batch (double_mask_forward=True)",
          "the mask pre-training loss multiplies lambda_div twice (no effect at lambda_div = 1)")
NOTES = ("the backdoor and cross samples are composed in BackdoorBench's normalised space and mapped back to pixels "
         "for our classifiers, which normalise their own input (equal up to float rounding)",
         "a batch without a backdoor sample (rate x batch < 1) leaves out the diversity term, whose official value is "
         "the NaN mean of an empty batch (its gradients are the same)",
         "the classifier's running train_acc counts the composed labels, as BackdoorBench's train_acc",
         "the yaml's random_crop 5 and random_rotation 10 are unused by attack/inputaware.py's train step (no "
         "post-tensor transform): the batches get only the standard train transform")


@dataclass(frozen=True)
class InputAwareLoop:
    """``config/attack/inputaware/default.yaml``: learning rates, Adam betas of the generators, the three MultiStepLR
    schedules (per epoch, ×``gamma``), the loss weights, the 25 mask pre-training epochs; ``augmentation`` None is
    BackdoorBench's train transform (crop 4, flip on CIFAR-10 only); ``normalization`` the dataset whose
    BackdoorBench statistics the generators see."""

    lr_c: float = 0.01
    lr_g: float = 0.01
    lr_m: float = 0.01
    betas: tuple[float, float] = (0.5, 0.9)
    milestones_c: tuple[int, ...] = (100, 200, 300, 400)
    milestones_g: tuple[int, ...] = (200, 300, 400, 500)
    milestones_m: tuple[int, ...] = (10, 20)
    gamma: float = 0.1
    lambda_div: float = 1.0
    lambda_norm: float = 100.0
    mask_density: float = 0.032
    mask_epochs: int = 25
    accumulate_generator_grads: bool = True
    double_mask_forward: bool = True
    augmentation: str | None = None
    normalization: str = "cifar10"
    generator_base: int = 32  # the non-MNIST generator: 3 steps from 32 channels
    generator_steps: int = 3
    loop: str = "inputaware_bb"  # which training loop (attack_training.LOOPS)

    def __post_init__(self):
        if isinstance(self.mask_epochs, bool) or not isinstance(self.mask_epochs, int) or self.mask_epochs < 1:
            raise ValueError(f"mask_epochs must be an integer >= 1, got {self.mask_epochs!r}")
        for name in ("lr_c", "lr_g", "lr_m", "lambda_div", "lambda_norm", "mask_density", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if dataset_info(self.normalization).stats("backdoorbench") is None:
            raise ValueError(f"BackdoorBench has no normalisation for {self.normalization!r}")

    def notes(self) -> tuple[str, ...]:
        """The attack's deviations and notes: each official quirk, reproduced or (where switched off) not, then
        the differences of form (:data:`NOTES`)."""
        kept = (self.accumulate_generator_grads, self.double_mask_forward, True)
        return tuple(("reproduced: " if on else "NOT reproduced (switched off): ") + quirk
                     for quirk, on in zip(QUIRKS, kept)) + NOTES

    def schedule(self, base):
        """The classifier's config: ``base`` (the spec's No-Defense schedule: epochs, batch size, precision) with the
        official optimizer (SGD at lr_C, momentum 0.9, weight decay 5e-4), MultiStepLR at milestones_C and no
        augmentation of the loop's own (the loop augments both of its batches)."""
        return base.with_(optimizer="sgd", lr=self.lr_c, momentum=0.9, weight_decay=5e-4, nesterov=False,
                          schedule="multistep", milestones=tuple(self.milestones_c), gamma=self.gamma,
                          augmentation="none")

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = dataset_info(self.normalization).stats("backdoorbench")
        return torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def networks(self, channels: int = 3) -> tuple[PatternGenerator, PatternGenerator]:
        """Fresh ``(pattern generator, mask generator)``."""
        return (PatternGenerator(channels, None, self.generator_base, self.generator_steps),
                PatternGenerator(channels, 1, self.generator_base, self.generator_steps))

    def trigger_from_training(self, extras: dict) -> "GeneratorTrigger":
        """The test trigger from the ``attack_training`` stage's extras (the trained networks' state dicts)."""
        net_g, net_m = self.networks()
        net_g.load_state_dict(extras["generator"])
        net_m.load_state_dict(extras["mask"])
        return GeneratorTrigger(net_g.eval(), net_m.eval(), self)


class Normaliser:
    """BackdoorBench's per-channel ``(x − μ) / σ`` and its inverse, on the device of the images."""

    def __init__(self, loop: InputAwareLoop, device):
        mean, std = loop.stats()
        self.mean, self.std = mean.to(device), std.to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def backdoor(net_g, net_m, xn: torch.Tensor, norm: Normaliser):
    """``(x + (p − x) · m, normalised p, m)`` of normalised images ``xn``: their own pattern and thresholded mask."""
    patterns = norm(net_g(xn))
    masks = threshold(net_m(xn))
    return apply_pattern(xn, patterns, masks), patterns, masks


def cross(net_g, net_m, xn1: torch.Tensor, xn2: torch.Tensor, norm: Normaliser):
    """``xn1`` with the pattern and mask generated from ``xn2``; also returns the (normalised) patterns."""
    patterns = norm(net_g(xn2))
    masks = threshold(net_m(xn2))
    return apply_pattern(xn1, patterns, masks), patterns


def mask_loss(net_m, xn1: torch.Tensor, xn2: torch.Tensor, loop: InputAwareLoop) -> torch.Tensor:
    """The mask pre-training loss of normalised batches ``xn1``, ``xn2`` (density and diversity terms)."""
    if loop.double_mask_forward:  # quirk: the official step runs netM(inputs1) once more and drops the output
        with torch.no_grad():  # (only its BatchNorm running statistics move; no gradient flows from it)
            net_m(xn1)
    masks1, masks2 = threshold(net_m(xn1)), threshold(net_m(xn2))
    return mask_pretraining_loss(xn1, xn2, masks1, masks2, loop.mask_density, loop.lambda_norm, loop.lambda_div)


def joint_loss(net_c, net_g, net_m, x1, x2, y1, num_bd: int, attack_labels, loop: InputAwareLoop, norm: Normaliser):
    """One batch of the joint stage (pixel batches ``x1``, ``x2``): ``(loss, logits, targets)``, with ``loss`` =
    cross-entropy on the composed batch + ``lambda_div`` · diversity of the backdoor patterns against the cross ones.
    ``net_c`` takes pixel images (it normalises them itself)."""
    xn1, xn2 = norm(x1), norm(x2)
    bd, patterns1, _ = backdoor(net_g, net_m, xn1[:num_bd], norm)
    crossed, patterns2 = cross(net_g, net_m, xn1[num_bd:2 * num_bd], xn2[num_bd:2 * num_bd], norm)
    inputs = torch.cat([norm.pixels(torch.cat([bd, crossed])), x1[2 * num_bd:]])
    targets = torch.cat([attack_labels(y1[:num_bd]), y1[num_bd:]])
    logits = net_c(inputs)
    loss = F.cross_entropy(logits, targets)
    if num_bd > 0:
        loss = loss + diversity_loss(xn1[:num_bd], xn2[num_bd:2 * num_bd], patterns1, patterns2) * loop.lambda_div
    return loss, logits, targets


@dataclass(frozen=True, eq=False)
class GeneratorTrigger:
    """BackdoorBench's stored backdoor test image: ToTensor, Normalize, the trained generators in eval mode, the
    composition in normalised space, its inverse Normalize (std 1/σ, then mean −μ), ``mul(255).byte()``."""

    net_g: PatternGenerator
    net_m: PatternGenerator
    loop: InputAwareLoop
    batch_size: int = 500

    @torch.no_grad()
    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        net_g, net_m = self.net_g.to(images.device).eval(), self.net_m.to(images.device).eval()
        norm = Normaliser(self.loop, images.device)
        inverse_std, negative_mean = 1 / norm.std, -norm.mean
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            xn = norm(images[start:start + self.batch_size].float().div(255))
            bd, _, _ = backdoor(net_g, net_m, xn, norm)
            pixels = bd / inverse_std - negative_mean
            out.append(torch.trunc(pixels * 255).clamp(0, 255).to(torch.uint8))
        return torch.cat(out) if out else images.clone()


def learned_trigger(key: str) -> PlaceholderTrigger:
    """What ``get_attack`` holds for a trigger that only the attack's training produces."""
    return PlaceholderTrigger(key, "is learned by its training loop: evaluation.evaluated_attack(spec, cache) "
                                   "rebuilds it from the attack_training stage")

