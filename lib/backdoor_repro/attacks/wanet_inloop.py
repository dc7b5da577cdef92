"""WaNet as BackdoorBench trains it (``attack/wanet.py``): the poisoning happens inside the attacker's training loop.

Every batch of ``bs`` shuffled clean images: the first ``int(bs · rate)`` are warped and relabelled to the target,
the next ``int(that · cross_ratio)`` are warped with the grid plus per-image noise of ±1/H and keep their labels,
the rest stay clean; then the whole batch goes through the post-tensor transform (:mod:`.post_tensor`). Where
``bs · rate < 1`` a batch holds one poisoned image with probability ``bs · rate`` (BackdoorBench's
``generalize_to_lower_pratio``). The warp field is :func:`.wanet.warp_grid`, drawn once from ``data_seed``.

The test trigger (:class:`NormalizedWarpTrigger`) repeats the arithmetic of BackdoorBench's stored backdoor test
set: ToTensor, Normalize, ``grid_sample`` on the normalised image, its inverse Normalize (two Normalize steps with
std 1/σ and mean −μ), then ``mul(255).byte()`` (truncation) as ``ToPILImage`` stores a float image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F

from ..datasets import dataset_info
from .post_tensor import PostTensorConfig
from .sizes import SizedTrigger
from .wanet import SIZE_RULE, warp_grid


@dataclass(frozen=True)
class WanetLoop:
    """What BackdoorBench's WaNet loop adds to an attack (``config/attack/wanet/default.yaml``): the warp, the noise
    ("cross") share, the post-tensor transform and the schedule its yaml sets (MultiStepLR at 100, 200, 300, 400,
    ×0.1, stepped per epoch, so a 100-epoch run keeps its lr; ``milestones=None`` keeps the spec's schedule)."""

    k: int = 4
    s: float = 0.5
    grid_rescale: float = 1.0
    cross_ratio: float = 2.0
    transform: PostTensorConfig = field(default_factory=PostTensorConfig)
    milestones: tuple[int, ...] | None = (100, 200, 300, 400)
    gamma: float = 0.1
    loop: str = "wanet_bb"  # which training loop (attack_training.LOOPS)

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"k must be an integer >= 2, got {self.k!r}")
        for name in ("s", "grid_rescale", "cross_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    def schedule(self, base):
        """The attacker's training config: ``base`` (the spec's No-Defense schedule) with this loop's lr steps and
        no augmentation of its own (the loop applies the post-tensor transform)."""
        if self.milestones is None:
            return base.with_(augmentation="none")
        return base.with_(schedule="multistep", milestones=tuple(self.milestones), gamma=self.gamma,
                          augmentation="none")


def batch_counts(bs: int, rate: float, cross_ratio: float, gen: torch.Generator | None = None) -> tuple[int, int]:
    """``(poisoned, cross)`` of a batch of ``bs``: ``int(bs · rate)`` and ``int(that · cross_ratio)``; below one
    poisoned image per batch, one with probability ``bs · rate`` (drawn from ``gen``)."""
    expected = rate * bs
    if expected >= 1:
        num_bd = int(expected)
    else:
        if gen is None:
            raise ValueError(f"rate {rate} x batch {bs} < 1: the per-batch draw needs a generator")
        num_bd = int(torch.rand((), generator=gen, device=gen.device).item() < expected)
    return num_bd, int(num_bd * cross_ratio)


def warp_float(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear ``grid_sample`` (align_corners=True) of float images, one grid for all or one per image; no rounding
    (the loop trains on the warped floats)."""
    grid = grid.to(x.device, x.dtype)
    if grid.ndim == 3:
        grid = grid.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", align_corners=True)


def noisy_grids(grid: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` noise-mode grids: ``clamp(grid + (U(−1, 1) of shape (n, H, W, 2)) / H, −1, 1)``."""
    size = grid.shape[0]
    ins = torch.rand(n, size, size, 2, generator=gen, device=gen.device) * 2 - 1
    return torch.clamp(grid.to(ins.device).repeat(n, 1, 1, 1) + ins / size, -1, 1)


def compose_batch(x: torch.Tensor, y: torch.Tensor, grid: torch.Tensor, counts: tuple[int, int],
                  poisoned_labels, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch as BackdoorBench's train step builds it (before the post-tensor transform): ``counts`` =
    (poisoned, cross); ``poisoned_labels(y)`` gives the attack labels of the first ones."""
    num_bd, num_cross = counts
    cross = x[num_bd:num_bd + num_cross]
    parts = [warp_float(x[:num_bd], grid), warp_float(cross, noisy_grids(grid, cross.shape[0], gen)),
             x[num_bd + cross.shape[0]:]]
    return torch.cat(parts), torch.cat([poisoned_labels(y[:num_bd]), y[num_bd:]])


@dataclass(frozen=True, eq=False)
class NormalizedWarpTrigger:
    """The stored backdoor test images of BackdoorBench's WaNet (see the module's docstring)."""

    grid: torch.Tensor  # (H, W, 2)
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        inverse_std = torch.tensor([1 / s for s in self.std], dtype=torch.float32, device=images.device)
        negative_mean = torch.tensor([-m for m in self.mean], dtype=torch.float32, device=images.device)
        x = (images.float().div(255) - mean) / std
        x = warp_float(x, self.grid)
        x = x / inverse_std.view(1, -1, 1, 1) - negative_mean.view(1, -1, 1, 1)
        return torch.trunc(x * 255).clamp(0, 255).to(torch.uint8)


def _test_trigger_at(k, s, grid_rescale, data_seed, stats, size):
    return NormalizedWarpTrigger(warp_grid(k, s, grid_rescale, size, data_seed), *stats)


def test_trigger(loop: WanetLoop, data_seed: int, normalization: str) -> SizedTrigger:
    """The test trigger at any square size, normalised with BackdoorBench's statistics of ``normalization`` (a
    dataset name: cifar10, cifar100, gtsrb)."""
    stats = dataset_info(normalization).stats("backdoorbench")
    if stats is None:
        raise ValueError(f"BackdoorBench has no normalisation for {normalization!r}")
    build = partial(_test_trigger_at, loop.k, loop.s, loop.grid_rescale, data_seed, (tuple(stats[0]), tuple(stats[1])))
    return SizedTrigger(build, None, SIZE_RULE)
