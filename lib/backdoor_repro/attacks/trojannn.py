"""TrojanNN as BackdoorBench runs it (FMP's code base; ``attacks.md`` §3.3, ``trojannn_bb``).

The trigger is optimised once on the attacker's clean PreAct-ResNet-18, then added to a random 10 % of the training
images (all classes), relabelled to the target 0. The official recipe (BackdoorBench ``attack/trojannn.py``,
``config/attack/trojannn/preactresnet18.yaml``, identical in ASE2023Paper/FMT):

* the mask ``resource/trojannn/apple4.png`` (224 × 224, black/white), resized to the image size with PIL's bilinear
  filter and scaled to [0, 1], is both the start image and, where it is above 0, the region that may change;
* the network is ``PreActResNet18(num_classes=1000)`` with every clean-model weight whose shape fits copied in: the
  10-class ``linear`` layer does not fit, so the 1000-way layer keeps its random initialisation;
* the 2 "most connected" neurons are the inputs of that untrained ``linear`` layer (the pooled features) with the
  largest column sums of ``|W|``;
* 1,000 steps of sign-gradient descent (step 0.1, ℓ∞ radius 0.3 around the mask, clamped to [0, 1]) on
  ``Σ_neurons Σ_batch (feature - 100)²``, the features computed from the *unnormalised* [0, 1] image; the loop stops
  after the update of the first step whose cost was below 1e-3;
* the result × 255 truncated to uint8 is the pattern; it is added to an image and the float sum cast to uint8
  before the clip, so sums above 255 wrap (``cast_wrap``).

The registered ``trojannn_bb`` holds :class:`TrojanSearch` (``Attack.trigger_search``) and a placeholder trigger
until its pattern exists: ``spec.trigger_stage()`` keys the pattern, ``pipeline.poisoned_training_set`` builds it on
the clean model and binds it, ``evaluation.evaluated_attack`` reads it back.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from numbers import Integral, Real
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn as nn
from PIL import Image

from . import additive
from .assets import image_asset
from .base import Attack, PlaceholderTrigger, assemble
from .ops import quantize

MASK = "backdoorbench/trojannn_apple4.png"
# config/attack/trojannn/preactresnet18.yaml and pgd_with_mask_to_selected_neuron's defaults
TROJANNN_BB = {"num_neurons": 2, "target_value": 100.0, "steps": 1000, "step": 0.1, "eps": 0.3, "tolerance": 1e-3}
OFFICIAL_HEAD_CLASSES = 1000  # generate_cls_model(num_classes=1000) for the optimisation
SMALL_RUN_STEPS = 2  # the search's steps in a small run (spec.small_run), as every other stage's couple of steps


def most_connected_neurons(weight: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` inputs of a layer with the largest sums of ``|W|`` over its outputs (and a convolution's kernel),
    largest first."""
    w = weight.detach().abs()
    if w.dim() == 4:
        w = w.flatten(2).sum(2)
    elif w.dim() != 2:
        raise ValueError(f"a linear or convolution weight is needed, got shape {tuple(weight.shape)}")
    return torch.argsort(w.sum(0), descending=True)[:k]


def untrained_head_weight(width: int = 64, num_classes: int = OFFICIAL_HEAD_CLASSES, seed: int = 0) -> torch.Tensor:
    """The weight of the randomly initialised ``linear`` layer the official selection reads: the draws of
    BackdoorBench's ``PreActResNet18(num_classes)`` at ``width`` built right after ``torch.manual_seed(seed)`` on the
    CPU (its convolutions in construction order, then the linear layer). The global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nn.Conv2d(3, width, 3, 1, 1, bias=False)
        cin = width
        for stage in range(4):
            cout = width * 2**stage
            for block in range(2):
                stride = 2 if stage > 0 and block == 0 else 1
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False)  # a PreActBlock builds bn1, conv1, bn2, conv2,
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False)  # then its shortcut (BatchNorm draws nothing)
                if stride != 1 or cin != cout:
                    nn.Conv2d(cin, cout, 1, stride, bias=False)
                cin = cout
        return nn.Linear(cin, num_classes).weight.detach().clone()


def trojannn_mask(size: int = 32) -> torch.Tensor:
    """The official mask as float32 ``(1, 3, size, size)`` in [0, 1] (torchvision Resize, bilinear, then ToTensor)."""
    return (image_asset(MASK, size, Image.BILINEAR).float() / 255).unsqueeze(0)


def optimise_trigger(features: Callable[[torch.Tensor], torch.Tensor], mask: torch.Tensor, neurons: Sequence[int],
                     target_values: Sequence[float], steps: int, step: float, eps: float,
                     tolerance: float) -> torch.Tensor:
    """Sign-gradient descent of ``Σ_i Σ_batch (features(x · keep)[:, neurons[i]] - target_values[i])²`` from
    ``x = mask``, ``keep = mask > 0``; every iterate within ``eps`` of the mask and in [0, 1]. Returns ``x``."""
    keep = mask > 0
    x = mask.detach().clone()
    for _ in range(steps):
        x.requires_grad_(True)
        feats = features(x * keep)
        cost = 0
        for neuron, value in zip(neurons, target_values):
            cost = cost + ((feats[:, int(neuron)] - value) ** 2).sum()
        (grad,) = torch.autograd.grad(cost, x)
        moved = x.detach() - step * grad.sign()
        x = (mask + (moved - mask).clamp(-eps, eps)).clamp(0, 1)
        if cost.item() < tolerance:  # checked after the update, as the official loop does
            break
    return x.detach()


def optimised_pattern(model: nn.Module, seed: int = 0, size: int = 32, normalized_input: bool = False,
                      **settings) -> dict:
    """The official TrojanNN trigger on the attacker's clean ``model`` (a :class:`~backdoor_repro.models.Classifier`):
    ``{"pattern": uint8 (3, size, size), "neurons": LongTensor}``. ``normalized_input=False`` (official) feeds the
    [0, 1] image past the model's normalisation layer; ``settings`` override :data:`TROJANNN_BB`."""
    cfg = {**TROJANNN_BB, **settings}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    width = model.backbone.conv1.out_channels
    neurons = most_connected_neurons(untrained_head_weight(width, seed=seed), cfg["num_neurons"])
    forward = model.features if normalized_input else model.backbone
    x = optimise_trigger(forward, trojannn_mask(size).to(device), neurons.tolist(),
                         [float(cfg["target_value"])] * len(neurons), cfg["steps"], cfg["step"], cfg["eps"],
                         cfg["tolerance"])
    model.train(was_training)
    return {"pattern": quantize(x[0] * 255, "clip_floor").cpu(), "neurons": neurons}


def trojan_trigger(pattern: torch.Tensor) -> additive.AdditiveTrigger:
    """The optimised uint8 pattern added to the image, the sum cast to uint8 (wraps above 255), as TrojanTrigger."""
    return additive.AdditiveTrigger(pattern.double(), rounding="cast_wrap")


def trojannn_bb_attack(pattern: torch.Tensor, data_seed: int = 0, **common) -> Attack:
    """``trojannn_bb`` with its optimised ``pattern`` bound: round(0.1 N) drawn from all classes, relabelled to 0."""
    return replace(unoptimised_attack(TrojanSearch(), **common), trigger=trojan_trigger(pattern))


@dataclass(frozen=True)
class TrojanSearch:
    """TrojanNN's trigger optimisation on the clean model (:data:`TROJANNN_BB` by default): the settings key the
    ``trojannn_trigger`` stage; :meth:`optimise` makes its artifact and :meth:`trigger` turns it into the trigger."""

    num_neurons: int = TROJANNN_BB["num_neurons"]
    target_value: float = TROJANNN_BB["target_value"]
    steps: int = TROJANNN_BB["steps"]
    step: float = TROJANNN_BB["step"]
    eps: float = TROJANNN_BB["eps"]
    tolerance: float = TROJANNN_BB["tolerance"]
    stage: ClassVar[str] = "trojannn_trigger"  # the stage's name (its artifact folder)
    version: ClassVar[int] = 1  # the stage's code version: bump it when the optimisation changes what it computes
    architectures: ClassVar[tuple[str, ...]] = ("preact_resnet18",)  # untrained_head_weight draws this network's

    def __post_init__(self):
        for name in ("num_neurons", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"trojannn_bb: {name} must be a positive integer, got {value!r}")
        for name in ("target_value", "step", "eps", "tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ValueError(f"trojannn_bb: {name} must be a number, got {value!r}")
        if self.step <= 0 or self.eps <= 0 or self.tolerance < 0:
            raise ValueError(f"trojannn_bb: step and eps must be positive and tolerance non-negative, got step "
                             f"{self.step}, eps {self.eps}, tolerance {self.tolerance}")

    def check_model(self, model: str, width: int) -> None:
        """``ValueError`` unless the clean model is one whose untrained head this search reproduces."""
        if model not in self.architectures:
            raise ValueError(f"trojannn_bb picks its neurons from the untrained head of BackdoorBench's "
                             f"{', '.join(self.architectures)}: the spec's model is {model}")
        if self.num_neurons > 8 * width:
            raise ValueError(f"trojannn_bb: {self.num_neurons} neurons asked of a {8 * width}-feature network")

    def for_run(self, small_run: bool) -> "TrojanSearch":
        """The search a run makes: a small run (a dry run, the grid's plumbing) takes :data:`SMALL_RUN_STEPS` at most."""
        return replace(self, steps=min(self.steps, SMALL_RUN_STEPS)) if small_run else self

    def optimise(self, model: nn.Module, size: int, seed: int) -> dict:
        """The stage's artifact on the clean ``model``: ``{"pattern", "neurons"}`` (:func:`optimised_pattern`)."""
        return optimised_pattern(model, seed=seed, size=size, **asdict(self))

    def trigger(self, stored: dict) -> additive.AdditiveTrigger:
        return trojan_trigger(stored["pattern"])


def unoptimised_trigger(key: str) -> PlaceholderTrigger:
    """What ``get_attack`` holds for an attack whose trigger is optimised on the clean model."""
    return PlaceholderTrigger(key, "is optimised on the clean model: pipeline.poisoned_training_set binds it (the "
                                   "spec's trigger_stage), evaluation.evaluated_attack(spec, cache) reads it back")


def unoptimised_attack(search: TrojanSearch, **common) -> Attack:
    """The registry's ``trojannn_bb``: :func:`trojannn_bb_attack` with ``search`` and a placeholder trigger."""
    return assemble("trojannn_bb", unoptimised_trigger("trojannn_bb"), common, target=0, selection="random_all",
                    rate=0.1, official_stream="backdoorbench", trigger_search=search,
                    source="BackdoorBench attack/trojannn.py, config/attack/trojannn/preactresnet18.yaml "
                           "(trigger optimised on our clean model)")
