"""Label-consistent poisoning (``attacks.md`` §3.5): target-class images are first made hard to
classify with a PGD perturbation against a clean model, then the trigger is stamped on them."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pgd_adversary(model: torch.nn.Module, eps: float, step: float, steps: int, seed: int, batch_size: int = 256):
    """Untargeted ℓ∞ PGD with a uniform random start, every iterate clamped to [0, 1], rounded to uint8.

    ``model`` takes float images in [0, 1] (normalisation inside the model). Returns the adversary
    callable that :meth:`Attack.poison` expects.
    """

    def perturb(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(device).float() / 255
            y = labels[start:start + batch_size].to(device)
            delta = (torch.rand(x.shape, generator=gen, device=device) * 2 - 1) * eps
            for _ in range(steps):
                delta.requires_grad_(True)
                loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
                (grad,) = torch.autograd.grad(loss, delta)
                delta = (delta + step * grad.sign()).clamp(-eps, eps)
                delta = ((x + delta).clamp(0, 1) - x).detach()  # keep every iterate a valid image
            out.append(((x + delta).clamp(0, 1) * 255).round().to(torch.uint8).to(images.device))
        model.train(was_training)
        return torch.cat(out)

    return perturb
