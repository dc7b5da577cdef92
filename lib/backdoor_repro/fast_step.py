"""What a training step needs to run without host round trips, so that it can be compiled or captured whole.

* **Fused optimizers with the learning rate as a device tensor** (CUDA): one kernel per parameter group per step,
  and a new learning rate is a device-to-device copy from a per-epoch table (:class:`StepValues`), not a Python
  float that a compiled or captured step would have to be rebuilt for.
* **Per-step schedule values as device tensors**: the learning rate, MixMatch's λ_u ramp and its MixUp λ are
  computed for a whole epoch on the host (in double precision, as the scalar code computes them), moved to the
  device once, and indexed per step.
* The CPU keeps plain Python floats and the non-fused optimizers: the CPU's numbers stay bit-identical to the
  scalar code (the smoke tables are byte-for-byte reproducible; see numerics.py). A dry run of a GPU profile on
  the CPU switches the GPU paths on (:func:`enable_gpu_step_paths`), so CI runs every line of them.
"""
from __future__ import annotations

from typing import Sequence

import torch

_gpu_paths_on_cpu = False


def enable_gpu_step_paths(enabled: bool) -> bool:
    """Take the GPU's step paths (fused optimizers, device-tensor schedules) on the CPU too: the dry run."""
    global _gpu_paths_on_cpu
    _gpu_paths_on_cpu = bool(enabled)
    return _gpu_paths_on_cpu


def device_schedules(device: torch.device) -> bool:
    """Whether steps on ``device`` take fused optimizers and per-step values as device tensors."""
    return torch.device(device).type == "cuda" or _gpu_paths_on_cpu


class StepValues:
    """One epoch of a per-step schedule: ``values[i]`` is a Python float on the scalar path, or a 0-dim view of one
    device tensor on the device path (no host sync, no new kernel argument per step)."""

    def __init__(self, values: Sequence[float], device: torch.device, on_device: bool | None = None):
        self.floats = [float(v) for v in values]
        on_device = device_schedules(device) if on_device is None else on_device
        self.tensor = torch.tensor(self.floats, dtype=torch.float32, device=device) if on_device else None

    def __len__(self) -> int:
        return len(self.floats)

    def __getitem__(self, i: int):
        return self.tensor[i] if self.tensor is not None else self.floats[i]


def _learning_rate(lr: float, device: torch.device):
    return torch.tensor(float(lr), dtype=torch.float32, device=device) if device_schedules(device) else lr


def sgd(params, lr: float, device: torch.device, **options) -> torch.optim.SGD:
    """SGD: fused with a device-tensor learning rate on the device path, torch's default implementation otherwise."""
    device = torch.device(device)
    fused = {"fused": True} if device_schedules(device) else {}
    return torch.optim.SGD(params, lr=_learning_rate(lr, device), **options, **fused)


def adam(params, lr: float, device: torch.device, **options) -> torch.optim.Adam:
    """Adam (coupled L2 weight decay), fused with a device-tensor learning rate on the device path."""
    device = torch.device(device)
    fused = {"fused": True} if device_schedules(device) else {}
    return torch.optim.Adam(params, lr=_learning_rate(lr, device), **options, **fused)


def set_lr(opt: torch.optim.Optimizer, value) -> None:
    """Every group's learning rate to ``value`` (a float, or a 0-dim tensor from :class:`StepValues`): copied into
    the group's tensor on the device path (device to device), assigned on the scalar path."""
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)  # a float, or a 0-dim tensor on the same device (no host sync)
        else:
            group["lr"] = float(value)


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict(state)``, with a device-tensor learning rate moved to the group's parameters' device
    (torch moves the per-parameter state, not the groups' entries: a cached state comes back on the CPU)."""
    opt.load_state_dict(state)
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor) and group["params"]:
            group["lr"] = group["lr"].to(group["params"][0].device)


def current_lr(opt: torch.optim.Optimizer) -> float:
    """The first group's learning rate as a float (one host read: for the per-epoch history only)."""
    return float(opt.param_groups[0]["lr"])
