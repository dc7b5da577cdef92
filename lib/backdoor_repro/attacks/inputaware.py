"""Input-aware dynamic backdoor as BackdoorBench builds it (``attack/inputaware.py``): the networks and the losses.
Its training loop (mask pre-training, then the classifier and the pattern generator trained together; registered
as ``inputaware_bb``) is ``attacks/inputaware_loop.py`` (the batch, the config, the quirks, the test trigger) and
``attack_inputaware.py`` (the two stages); these are its pieces, each tested on fixed tiny inputs.

* :class:`PatternGenerator` — the encoder-decoder both generators share (non-MNIST: 3 steps from 32 channels):
  per step two 3×3 conv blocks (conv with bias, BatchNorm eps 1e-5 momentum 0.05, ReLU) and a 2×2 max-pool;
  a middle block; per step a ×2 bilinear upsample and two blocks, the very last without ReLU; the output is
  ``tanh(tanh(z)) / (2 + 1e-7) + 0.5``: the generator's registered Tanh runs as its last child, and its forward
  applies a second one. The pattern generator outputs the image's channels, the mask generator one.
* :func:`threshold` — the mask's squashing, ``tanh(20 m − 10) / (2 + 1e-7) + 0.5``.
* :func:`diversity_loss`, :func:`mask_norm_loss`, :func:`mask_pretraining_loss`, :func:`apply_pattern`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

EPSILON = 1e-7  # the generator's and the losses' epsilon (config/attack/inputaware/default.yaml EPSILON)


def conv_block(in_channels: int, out_channels: int, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.05)]
    return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if relu else []))


class Upsample(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def generator_layers(in_channels: int, out_channels: int, base: int = 32, steps: int = 3) -> list[nn.Module]:
    """The encoder-decoder's layers in order (see the module's docstring)."""
    layers, current, following = [], in_channels, base
    for step in range(steps):
        layers += [conv_block(current, following), conv_block(following, following), nn.MaxPool2d(2, 2)]
        if step < steps - 1:
            current, following = following, following * 2
    layers.append(conv_block(following, following))
    current, following = following, following // 2
    for step in range(steps):
        last = step == steps - 1
        layers += [Upsample(), conv_block(current, current), conv_block(current, following, relu=not last)]
        current, following = following, following // 2
        if step == steps - 2:
            following = out_channels
    return layers


class PatternGenerator(nn.Module):
    """BackdoorBench's ``InputAwareGenerator``: ``out_channels`` None gives the pattern generator (the input's
    channels), 1 the mask generator. Inputs are the normalised images, as its loaders give them."""

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, base: int = 32, steps: int = 3):
        super().__init__()
        if steps < 2:
            raise ValueError(f"steps must be >= 2, got {steps!r}")
        self.body = nn.Sequential(*generator_layers(in_channels, out_channels or in_channels, base, steps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.tanh(self.body(x))) / (2 + EPSILON) + 0.5


def threshold(masks: torch.Tensor) -> torch.Tensor:
    return torch.tanh(masks * 20 - 10) / (2 + EPSILON) + 0.5


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per sample: the square root of the mean squared difference over channels, rows and columns."""
    return ((a - b) ** 2).mean(dim=(1, 2, 3)).sqrt()


def diversity_loss(inputs1, inputs2, patterns1, patterns2) -> torch.Tensor:
    """Mean over the batch of ‖x1 − x2‖ / (‖p1 − p2‖ + ε), each distance the RMS over the image."""
    return (_distance(inputs1, inputs2) / (_distance(patterns1, patterns2) + EPSILON)).mean()


def mask_norm_loss(masks: torch.Tensor, density: float) -> torch.Tensor:
    """The mean of ``relu(mask − density)`` over every mask value (default density 0.032)."""
    return F.relu(masks - density).mean()


def mask_pretraining_loss(inputs1, inputs2, masks1, masks2, density: float, lambda_norm: float,
                          lambda_div: float) -> torch.Tensor:
    """The mask stage's loss: ``lambda_norm · norm + lambda_div · (lambda_div · diversity)`` (the code scales the
    diversity term by lambda_div twice; the default lambda_div is 1)."""
    return lambda_norm * mask_norm_loss(masks1, density) + lambda_div * (
        diversity_loss(inputs1, inputs2, masks1, masks2) * lambda_div)


def apply_pattern(inputs: torch.Tensor, patterns: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``x + (p − x) · m``: the backdoor (or, with another image's pattern and mask, the cross) sample."""
    return inputs + (patterns - inputs) * masks
