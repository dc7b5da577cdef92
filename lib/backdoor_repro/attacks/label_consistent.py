"""Label-consistent poisoning (``attacks.md`` §3.5): target-class images are first made hard to
classify with a PGD perturbation against a clean model, then the trigger is stamped on them. Where the official
perturbed images exist as a file (T&R's MadryLab inf_16.npy, BackdoorBench's craft_adv_dataset.py output),
:mod:`.lc_files` takes them instead (``adv_images=``); this PGD stays the default."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .ops import quantize


def pgd_adversary(model: torch.nn.Module, eps: float, step: float, steps: int, seed: int, batch_size: int = 256,
                  clamp: bool = True, normalized_input: bool = True, rounding: str = "round", random_start: bool = True):
    """Untargeted ℓ∞ PGD with a uniform random start; returns the adversary callable :meth:`Attack.poison` expects.

    Defaults (DBD's LC, T&R's CL substitute): every iterate clamped to [0, 1], the model sees normalised input
    (its own normalisation layer), the result rounded to uint8. FCT's CL (``utils/torchattacks/attacks/pgd.py``):
    ``clamp=False`` (iterates may leave [0, 1]), ``normalized_input=False`` (the [0, 1] image is fed to a model
    trained on normalised images, skipping its normalisation layer), ``rounding="cast_wrap"`` (× 255, then the
    float → uint8 cast, which wraps values outside [0, 255]). BackdoorBench's LC crafting (torchattacks' PGD):
    ``random_start=False``, ``rounding="clip_floor"`` (× 255, then ``.type(torch.uint8)``).
    """

    def forward(x):
        return model(x) if normalized_input else model.head(model.backbone(x))

    def perturb(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(device).float() / 255
            y = labels[start:start + batch_size].to(device)
            delta = (torch.rand(x.shape, generator=gen, device=device) * 2 - 1) * eps if random_start else \
                torch.zeros_like(x)
            if clamp:  # every iterate, the start included, a valid image; the loss sees it unclamped, so pixels
                delta = (x + delta).clamp(0, 1) - x  # at 0 or 255 keep their gradient (clamp's is 0 there)
            for _ in range(steps):
                delta.requires_grad_(True)
                loss = F.cross_entropy(forward(x + delta), y)
                (grad,) = torch.autograd.grad(loss, delta)
                delta = (delta + step * grad.sign()).clamp(-eps, eps)
                if clamp:
                    delta = (x + delta).clamp(0, 1) - x  # keep every iterate a valid image
                delta = delta.detach()
            adversarial = x + delta
            if clamp:
                adversarial = adversarial.clamp(0, 1)
            out.append(quantize(adversarial * 255, rounding).to(images.device))
        model.train(was_training)
        return torch.cat(out)

    return perturb
