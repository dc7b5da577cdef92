"""CIFAR ResNet-18 (3×3 stem, no max-pool; DBD, FCT's D-ST encoder), the same with a 3×3 stride-2 max-pool after
the stem (FCT's attacker / SD / D-BR network, huyvnphan's PyTorch_CIFAR10 ResNet-18) and PreAct-ResNet-18
(BackdoorBench/FMP: no BN or ReLU after the stem and none before the pooling, a 1×1 shortcut conv without BN on
the pre-activated input, which runs before ``conv1``).

``width`` is the first stage's channel count (64 in the papers); stages use width × 1, 2, 4, 8,
so ``width=8`` gives a 64-d feature for smoke runs. Both return the pooled feature vector; the
classification head lives in :class:`~backdoor_repro.models.Classifier`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .norm import BatchNorm2d


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        if out.dtype != shortcut.dtype or out.dtype in (torch.bfloat16, torch.float16):  # under autocast: the
            out, shortcut = out.float(), shortcut.float()  # residual stream in fp32, as BasicBlock's (norm.py)
        return out + shortcut


class ResNetBackbone(nn.Module):
    def __init__(self, block, width: int = 64, blocks=(2, 2, 2, 2), preact: bool = False, maxpool: bool = False):
        super().__init__()
        self.preact = preact
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = None if preact else BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if maxpool else None
        stages, cin = [], width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            layers = []
            for j in range(n):
                layers.append(block(cin, cout, stride=(1 if i == 0 or j > 0 else 2)))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = self.conv1(x)
        if self.bn1 is not None:
            out = F.relu(self.bn1(out))
        if self.maxpool is not None:
            out = self.maxpool(out)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def resnet18_backbone(width: int = 64) -> ResNetBackbone:
    return ResNetBackbone(BasicBlock, width)


def resnet18_maxpool_backbone(width: int = 64) -> ResNetBackbone:
    return ResNetBackbone(BasicBlock, width, maxpool=True)


def preact_resnet18_backbone(width: int = 64) -> ResNetBackbone:
    return ResNetBackbone(PreActBlock, width, preact=True)
