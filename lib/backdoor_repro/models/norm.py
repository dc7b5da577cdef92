"""BatchNorm that normalises in fp32 under autocast.

Under bf16 autocast a convolution's output is bf16, and ``nn.BatchNorm2d`` would normalise that bf16 tensor and
return bf16, so residual sums (``bn(conv(x)) + shortcut``) would run in bf16 too. These layers cast their input to
fp32 and normalise with autocast off: the statistics, the running averages and the output are fp32, and the next
convolution casts back to bf16 as autocast does. On an fp32 or fp64 input (every CPU run outside a dry run) they are exactly
``nn.BatchNorm1d`` / ``nn.BatchNorm2d``: same parameters, buffers, state-dict keys and numbers.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _fp32(forward, x: torch.Tensor) -> torch.Tensor:
    if x.dtype not in (torch.bfloat16, torch.float16):  # fp32 (and a float64 model's input) as it is
        return forward(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return forward(x.float())


class BatchNorm1d(nn.BatchNorm1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _fp32(super().forward, x)


class BatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _fp32(super().forward, x)
