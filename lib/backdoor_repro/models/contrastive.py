"""A backbone with a projection head for contrastive training (DBD's SimCLR stage, FCT's SS-CTL encoder).

The projector maps the pooled feature through Linear(d, d) → [BatchNorm1d] → ReLU → Linear(d, out); the
output is L2-normalised. DBD's head has the BatchNorm (``model/model.py SelfModel``); FCT's SupContrast head
does not (``ST/networks/resnet_big.py``).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .norm import BatchNorm1d


class ContrastiveEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, normalize: nn.Module, projection_dim: int = 128, batch_norm: bool = True):
        super().__init__()
        d = backbone.out_features
        self.normalize, self.backbone = normalize, backbone
        layers = [nn.Linear(d, d)] + ([BatchNorm1d(d)] if batch_norm else []) + [nn.ReLU(inplace=True),
                                                                                   nn.Linear(d, projection_dim)]
        self.projector = nn.Sequential(*layers)

    def forward(self, x):
        return F.normalize(self.projector(self.backbone(self.normalize(x))), dim=1)
