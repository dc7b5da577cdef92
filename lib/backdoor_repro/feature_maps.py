"""Feature maps of a network's convolutions, by stable module name, in forward-execution order.

FMP ranks every output channel of every ``Conv2d`` ("feature map") and its code lists them in the order the
convolutions run, which differs from the order they are registered in where a block's shortcut runs before its
first convolution (PreAct-ResNet). :func:`conv_layers` records that order with one forward pass;
:func:`capture_output` returns one convolution's output and can stop the forward there.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class ConvLayer:
    name: str  # the module's name in ``model.named_modules()``
    channels: int  # its output channels (feature maps)


def execution_order(model: nn.Module, types=(nn.Conv2d,), image_shape=(3, 32, 32)) -> list[str]:
    """Names of ``model``'s modules of ``types`` in the order one forward pass (a zero image, eval mode) runs them."""
    wanted = {name: m for name, m in model.named_modules() if isinstance(m, types)}
    ran: list[str] = []
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: ran.append(name)) for name, m in wanted.items()]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *image_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if sorted(ran) != sorted(wanted):
        raise ValueError("every module must run exactly once per forward pass")
    return ran


def conv_layers(model: nn.Module, image_shape=(3, 32, 32), order: str = "forward") -> list[ConvLayer]:
    """Every ``Conv2d`` of ``model``: ``order="forward"`` in the order a forward pass runs them,
    ``"registration"`` in ``named_modules()`` order."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if order == "registration":
        return [ConvLayer(name, m.out_channels) for name, m in convs.items()]
    if order != "forward":
        raise ValueError(f"order must be 'forward' or 'registration', got {order!r}")
    return [ConvLayer(name, convs[name].out_channels) for name in execution_order(model, (nn.Conv2d,), image_shape)]


def feature_map_site(model: nn.Module, conv: str) -> str:
    """Where FMP reads convolution ``conv``'s feature maps: its output, except for a PreAct block's ``conv2``,
    whose output the official block adds the shortcut to in place (``out += shortcut``), so the stored map is the
    block's output, the residual sum."""
    from .models.resnet import PreActBlock

    parent, _, child = conv.rpartition(".")
    if child == "conv2" and isinstance(dict(model.named_modules()).get(parent), PreActBlock):
        return parent
    return conv


class _Stop(Exception):
    pass


@contextmanager
def capture_output(model: nn.Module, name: str, stop: bool = False):
    """Within the block, forward passes store the output of ``model``'s module ``name`` in ``captured[0]``;
    with ``stop=True`` they end right after it (use :func:`forward_to`)."""
    module = dict(model.named_modules())[name]
    captured: list[torch.Tensor] = []

    def hook(mod, inp, out):
        captured[:] = [out]
        if stop:
            raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def forward_to(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """The output of ``model``'s module ``name`` on ``x``, without running the layers after it."""
    with capture_output(model, name, stop=True) as captured:
        try:
            model(x)
        except _Stop:
            pass
    if not captured:
        raise ValueError(f"module {name!r} did not run in the forward pass")
    return captured[0]
