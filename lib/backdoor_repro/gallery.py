"""Trigger gallery: clean image, poisoned image and the amplified difference for each attack."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .attacks import Attack


def poisoned_examples(attack: Attack, images: torch.Tensor) -> torch.Tensor:
    """The training-time trigger applied to ``images`` (label-consistent: trigger only, no PGD step)."""
    return attack.trigger.apply(images, train=True)


def amplified_difference(clean: torch.Tensor, poisoned: torch.Tensor) -> np.ndarray:
    """|poisoned − clean| per image scaled so its largest value is 255 (zero stays black)."""
    diff = (poisoned.float() - clean.float()).abs()
    peak = diff.flatten(1).amax(1).clamp(min=1).view(-1, 1, 1, 1)
    return (diff / peak * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def trigger_gallery(attacks: list[Attack], image: torch.Tensor, titles: list[str] | None = None):
    """One column per attack: clean, poisoned, amplified difference of the same uint8 ``(3, H, W)`` image."""
    clean = image.unsqueeze(0).expand(len(attacks), -1, -1, -1).contiguous()
    poisoned = torch.cat([poisoned_examples(a, image.unsqueeze(0)) for a in attacks])
    diff = amplified_difference(clean, poisoned)
    fig, axes = plt.subplots(3, len(attacks), figsize=(1.5 * len(attacks), 4.9), squeeze=False)
    rows = [("clean", clean.permute(0, 2, 3, 1).cpu().numpy()), ("poisoned", poisoned.permute(0, 2, 3, 1).cpu().numpy()),
            ("|diff|, amplified", diff)]
    for r, (label, batch) in enumerate(rows):
        for c, attack in enumerate(attacks):
            ax = axes[r, c]
            ax.imshow(batch[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title((titles or [a.key for a in attacks])[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig
