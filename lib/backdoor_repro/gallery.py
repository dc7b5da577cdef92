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


def trigger_gallery(attacks: list[Attack], image: torch.Tensor, titles: list[str] | None = None, per_row: int = 7):
    """Per attack a column of three: clean, poisoned and the amplified difference of the same uint8 ``(3, H, W)``
    image; at most ``per_row`` attacks side by side, the others in further bands of three rows."""
    clean = image.unsqueeze(0).expand(len(attacks), -1, -1, -1).contiguous()
    poisoned = torch.cat([poisoned_examples(a, image.unsqueeze(0)) for a in attacks])
    diff = amplified_difference(clean, poisoned)
    cols = min(per_row, len(attacks))
    bands = -(-len(attacks) // cols)
    fig, axes = plt.subplots(3 * bands, cols, figsize=(1.6 * cols + 0.6, 1.75 * 3 * bands), squeeze=False)
    rows = [("clean", clean.permute(0, 2, 3, 1).cpu().numpy()), ("poisoned", poisoned.permute(0, 2, 3, 1).cpu().numpy()),
            ("|diff|, amplified", diff)]
    names = titles or [a.key for a in attacks]
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for i in range(len(attacks)):
        band, c = divmod(i, cols)
        for r, (label, batch) in enumerate(rows):
            ax = axes[3 * band + r, c]
            ax.imshow(batch[i], interpolation="nearest")
            if r == 0:
                ax.set_title(names[i], fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    for ax in axes[3 * (bands - 1):, len(attacks) - cols * (bands - 1):].flat:  # the last band's empty places
        ax.axis("off")
    fig.tight_layout()
    return fig
