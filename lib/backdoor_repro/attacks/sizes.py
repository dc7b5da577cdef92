"""Which image sizes each trigger is defined at, and the check run before any compute.

A trigger built on one fixed pattern (a 32 × 32 patch, a shipped 32 × 32 file) supports the side length of
that pattern only. :class:`SizedTrigger` builds a trigger per side length from a rule (a blend image resized
to the image, a 256-px pattern centre-cropped to 224, ...), for a listed set of sizes or for any size
(``sizes=None``). Images must be square wherever a trigger declares its sizes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from numbers import Integral
from typing import Callable

from .registry import ATTACKS, get_attack


@dataclass(frozen=True, eq=False)
class SizedTrigger:
    """``build(size)`` gives the trigger for ``size`` × ``size`` images, built once per size.

    ``sizes``: the side lengths it is defined at (``None``: any); ``rule``: how the pattern scales, in words;
    ``default``: the size whose trigger answers attribute look-ups (``.pattern``, ``.alpha``, ...)."""

    build: Callable[[int], object] = field(repr=False)
    sizes: tuple[int, ...] | None
    rule: str
    default: int = 32
    _built: dict = field(default_factory=dict, repr=False)

    def at(self, size: int):
        if self.sizes is not None and size not in self.sizes:
            raise ValueError(f"this trigger is defined at {describe_sizes(self.sizes)} only, not {size} px "
                             f"({self.rule})")
        if size not in self._built:
            self._built[size] = self.build(size)
        return self._built[size]

    def apply(self, images, train: bool = True):
        return self.at(images.shape[-1]).apply(images, train)

    def __getattr__(self, name):  # only reached for names that are not fields
        if name.startswith("__") or name in {f.name for f in fields(SizedTrigger)}:
            raise AttributeError(name)
        return getattr(self.at(self.default), name)


def trigger_sizes(trigger) -> tuple[int, ...] | None:
    """The side lengths ``trigger`` is defined at; ``None`` for any size (or a trigger that does not say)."""
    if trigger is None:
        return None
    if isinstance(trigger, SizedTrigger):
        return trigger.sizes
    declared = getattr(type(trigger), "sizes", None)
    if declared is not None:
        return tuple(trigger.sizes)
    for name in ("pattern", "keep", "grid"):  # a fixed pattern: (C, H, W) or, for a warp grid, (H, W, 2)
        tensor = getattr(trigger, name, None)
        if tensor is not None:
            return (int(tensor.shape[0] if name == "grid" else tensor.shape[-1]),)
    return None


def _declares(trigger) -> bool:
    return isinstance(trigger, SizedTrigger) or trigger_sizes(trigger) is not None


def trigger_rule(trigger) -> str:
    if isinstance(trigger, SizedTrigger):
        return trigger.rule
    sizes = trigger_sizes(trigger)
    return f"a fixed {sizes[0]} × {sizes[0]} pattern" if sizes else "any size"


def describe_sizes(sizes: tuple[int, ...] | None) -> str:
    return "any square size" if sizes is None else " and ".join(f"{s} × {s}" for s in sizes)


def _side(image_size) -> tuple[int, int]:
    if isinstance(image_size, Integral):
        return int(image_size), int(image_size)
    height, width = (int(v) for v in tuple(image_size)[-2:])
    return height, width


def attack_sizes(attack) -> tuple[int, ...] | None:
    """The sizes both the trigger and (WaNet) the noise-mode trigger are defined at; ``None``: any."""
    found = [s for s in (trigger_sizes(attack.trigger), trigger_sizes(attack.cross_trigger)) if s is not None]
    if not found:
        return None
    return tuple(s for s in found[0] if all(s in other for other in found[1:]))


def size_error(attack, image_size) -> str | None:
    """Why ``attack`` cannot poison images of ``image_size`` (an int side, ``(H, W)`` or a batch shape); None if it can."""
    height, width = _side(image_size)
    if not any(_declares(t) for t in (attack.trigger, attack.cross_trigger)):
        return None  # a trigger that declares nothing (a user's own): not checked
    sizes = attack_sizes(attack)
    if height == width and (sizes is None or height in sizes):
        return None
    shape = f"{height} × {width}"
    return (f"attack {attack.key!r} does not support {shape} images: it is defined at {describe_sizes(sizes)} "
            f"({trigger_rule(attack.trigger)}). Attacks defined at {shape}: {', '.join(keys_for_size(height)) or 'none'}"
            if height == width else
            f"attack {attack.key!r} does not support {shape} images: its triggers are defined on square images "
            f"({describe_sizes(sizes)})")


def keys_for_size(size: int) -> list[str]:
    """The registered attack keys (with their defaults) that support ``size`` × ``size`` images."""
    out = []
    for key in sorted(ATTACKS):
        sizes = attack_sizes(get_attack(key))
        if sizes is None or size in sizes:
            out.append(key)
    return out


def check_attack_size(attack, image_size, data_seed: int = 0, **overrides) -> None:
    """Raise ``ValueError`` naming the attack, the size and the sizes it supports, unless ``attack`` (an
    :class:`Attack` or a registry key, built with ``overrides``) is defined at ``image_size`` (an int side,
    ``(H, W)`` or an ``(N, C, H, W)`` shape). Cheap: nothing is applied."""
    if isinstance(attack, str):
        attack = get_attack(attack, data_seed, **overrides)
    message = size_error(attack, image_size)
    if message:
        raise ValueError(message)
