"""Trap-and-Replace's WRN-16-1 (VITA-Group/Trap-and-Replace-Backdoor-Defense @ 89e0c3a, models/wideresnet*.py),
split into a stem and a replaceable head, with the stage-1 image-reconstruction decoder.

The network is FixMatch's pre-activation WideResNet: LeakyReLU(0.1), convolutions with bias, channels
``[w, w·k, 2w·k, 4w·k]`` (``w = 16``, ``k = 1`` in the paper; a smaller ``w`` for smoke runs), two blocks per
group, strides 1 / 2 / 2, then BN → LeakyReLU → global average pooling → FC. Inputs are images in [0, 1]
with no normalisation (the decoder reconstructs them through a sigmoid).

``stem_end_block`` says where the stem ends (T&R's ``--stem_end_block``): 4 after the second group, 5 after
the first block of the third group (the default), 6 after all blocks. The head is the rest; stage 2
replaces it with a fresh copy whose blocks carry dropout 0.5 (:func:`fresh_head`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .norm import BatchNorm2d

STEM_END_BLOCKS = (4, 5, 6)
LEAKY_SLOPE = 0.1


class WRNBlock(nn.Module):
    """BN → LeakyReLU → conv3×3 → BN → LeakyReLU → [dropout] → conv3×3, plus the identity or a 1×1 conv
    shortcut; every convolution has a bias.

    As in the official block: when the widths differ and ``activate_before_residual`` is False, the first
    BN → LeakyReLU output is unused and both the first convolution and the shortcut read the raw input
    (the official code computes and discards it; its BN parameters never get a gradient either way)."""

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float = 0.0, activate_before_residual: bool = False):
        super().__init__()
        self.bn1 = BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=True)
        self.bn2 = BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=True)
        self.drop_rate = drop_rate
        self.equal = cin == cout
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=True)
        self.activate_before_residual = activate_before_residual

    def forward(self, x):
        if self.equal:
            h = F.leaky_relu(self.bn1(x), LEAKY_SLOPE)
        else:
            if self.activate_before_residual:
                x = F.leaky_relu(self.bn1(x), LEAKY_SLOPE)
            h = x
        out = F.leaky_relu(self.bn2(self.conv1(h)), LEAKY_SLOPE)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return (x if self.equal else self.shortcut(x)) + out


class WRNHead(nn.Module):
    """The head after the stem: the remaining blocks, BN → LeakyReLU → global average pooling → FC."""

    def __init__(self, blocks: list[nn.Module], channels: int, num_classes: int):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.bn = BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, stem_out):
        out = F.leaky_relu(self.bn(self.blocks(stem_out)), LEAKY_SLOPE)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def _init(module: nn.Module) -> None:
    """The official initialisation: conv kaiming-normal (fan_out, leaky_relu), BN 1 / 0, linear xavier-normal
    with zero bias (transposed convolutions keep PyTorch's default)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)


def _group(n: int, cin: int, cout: int, stride: int, drop_rate: float = 0.0, activate_before_residual=False):
    return [WRNBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, drop_rate, activate_before_residual)
            for i in range(n)]


class TrapNet(nn.Module):
    """WRN-``depth``-``widen`` as ``stem`` + ``head`` (+ ``decoder`` for stage 1). ``model(x)`` gives logits."""

    def __init__(self, num_classes: int, width: int = 16, depth: int = 16, widen: int = 1, stem_end_block: int = 5,
                 decoder: bool = False):
        super().__init__()
        if stem_end_block not in STEM_END_BLOCKS:
            raise ValueError(f"stem_end_block must be one of {STEM_END_BLOCKS}, got {stem_end_block!r}")
        if (depth - 4) % 6 or width < 1 or widen < 1:
            raise ValueError(f"need depth = 6n + 4 and positive width / widen, got {depth}, {width}, {widen}")
        n = (depth - 4) // 6
        ch = [width, width * widen, 2 * width * widen, 4 * width * widen]
        self.channels, self.num_classes, self.n, self.stem_end_block = ch, num_classes, n, stem_end_block
        group3 = _group(n, ch[2], ch[3], 2)
        cut = {4: 0, 5: 1, 6: n}[stem_end_block]
        self.stem = nn.Sequential(nn.Conv2d(3, ch[0], 3, 1, 1, bias=True),
                                  *_group(n, ch[0], ch[1], 1, activate_before_residual=True),
                                  *_group(n, ch[1], ch[2], 2), *group3[:cut])
        self.head = WRNHead(group3[cut:], ch[3], num_classes)
        self.decoder = self._decoder() if decoder else None
        _init(self)

    def _decoder(self) -> nn.Sequential:
        """Stem output → image in [0, 1] (official ``WideResNetAE.decoder``, channels scaled with the width)."""
        if self.stem_end_block == 4:
            c = self.channels[2]
            return nn.Sequential(nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU(),
                                 nn.ConvTranspose2d(c, 3, 3, stride=1, padding=1), nn.Sigmoid())
        c = self.channels[3]
        return nn.Sequential(nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1), nn.ReLU(),
                             nn.ConvTranspose2d(c // 2, 3, 4, stride=2, padding=1), nn.Sigmoid())

    def forward(self, x):
        return self.head(self.stem(x))

    def forward_with_reconstruction(self, x):
        if self.decoder is None:
            raise ValueError("this TrapNet has no decoder (build it with decoder=True for stage 1)")
        stem_out = self.stem(x)
        return self.head(stem_out), self.decoder(stem_out)

    def fresh_head(self, drop_rate: float = 0.5) -> WRNHead:
        """A newly initialised head for stage 2 (official ``block3_aux`` → ``bn1_aux`` → ``fc_aux``): the blocks
        after the stem with in-block dropout ``drop_rate``."""
        ch, n = self.channels, self.n
        blocks = {4: _group(n, ch[2], ch[3], 2, drop_rate), 5: _group(n, ch[3], ch[3], 1, drop_rate)[:n - 1],
                  6: []}[self.stem_end_block]
        head = WRNHead(blocks, ch[3], self.num_classes)
        _init(head)
        return head.to(next(self.parameters()).device)

    def resplit(self, stem_end_block: int) -> "TrapNet":
        """The same network with its stem ending at ``stem_end_block`` (the blocks move between stem and head;
        no weight changes). Only for a network without a decoder, whose shape depends on the split."""
        if self.decoder is not None:
            raise ValueError("resplit a network without a decoder")
        if stem_end_block not in STEM_END_BLOCKS:
            raise ValueError(f"stem_end_block must be one of {STEM_END_BLOCKS}, got {stem_end_block!r}")
        layers = list(self.stem) + list(self.head.blocks)
        cut = 1 + 2 * self.n + {4: 0, 5: 1, 6: self.n}[stem_end_block]
        self.stem, self.head.blocks = nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:])
        self.stem_end_block = stem_end_block
        return self
