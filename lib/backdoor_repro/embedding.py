"""Feature embeddings for figures: backbone features of a sample, their 2-D t-SNE map (DBD Figure 1) and
2-D PCA of feature groups (T&R Figure 2)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .train import batched_outputs


@torch.no_grad()
def backbone_features(backbone: torch.nn.Module, normalize: torch.nn.Module, images: torch.Tensor,
                      batch_size: int = 1000) -> np.ndarray:
    device = next(backbone.parameters()).device
    backbone.eval()
    normalize = normalize.to(device)
    return batched_outputs(lambda x: backbone(normalize(x)).float(), images, device, batch_size).cpu().numpy()


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(features)


def tsne_panels(panels: dict[str, np.ndarray], labels: np.ndarray, poisoned: np.ndarray, classes, seed: int = 0):
    """One t-SNE panel per feature set: clean samples coloured by true class, poisoned ones as black crosses."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1.6, 4.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (title, feats) in zip(axes[0], panels.items()):
        xy = tsne_2d(feats, seed)
        for c in range(len(classes)):
            keep = (labels == c) & ~poisoned
            ax.scatter(xy[keep, 0], xy[keep, 1], s=4, color=cmap(c % 10), label=classes[c])
        ax.scatter(xy[poisoned, 0], xy[poisoned, 1], s=14, marker="x", color="black", label="poisoned")
        ax.set_title(title, fontsize=10)
        ax.set(xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2")
    axes[0, -1].legend(fontsize=8, markerscale=2, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


def pca_2d(features: np.ndarray) -> np.ndarray:
    """The first two principal components of ``features`` (rows = samples), by SVD of the centred matrix."""
    centred = features - features.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def pca_group_panels(panels: dict[str, dict[str, np.ndarray]], markers=("o", "s", "x")):
    """One PCA panel per model: each group of feature rows (e.g. clean airplanes, clean automobiles, poisoned
    automobiles) in its own colour and marker, the PCA fitted on the union of the panel's groups."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2.2, 4.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (title, groups) in zip(axes[0], panels.items()):
        xy = pca_2d(np.concatenate(list(groups.values())))
        start = 0
        for i, (name, feats) in enumerate(groups.items()):
            part = xy[start:start + len(feats)]
            start += len(feats)
            ax.scatter(part[:, 0], part[:, 1], s=10, marker=markers[i % len(markers)], color=cmap(i), label=name,
                       alpha=0.7)
        ax.set_title(title, fontsize=10)
        ax.set(xticks=[], yticks=[], xlabel="principal component 1", ylabel="principal component 2")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig


def relative_centroid_distance(points: np.ndarray, toward: np.ndarray, away: np.ndarray) -> float:
    """Mean distance of ``points`` to the centroid of ``toward`` over their mean distance to the centroid of
    ``away``, in the full feature space (a ratio, so models with differently scaled features compare): below 1,
    the points sit nearer ``toward``. T&R's Figure 2 in one number: poisoned source-class images against the
    target class (toward) and their own class (away)."""
    to_toward = np.linalg.norm(points - toward.mean(0), axis=1).mean()
    to_away = np.linalg.norm(points - away.mean(0), axis=1).mean()
    return float(to_toward / to_away)


def figure2_verdict(normal: float, trap: float) -> str:
    """Whether T&R's Figure 2 pattern holds, from the ratio (:func:`relative_centroid_distance`, poisoned images to
    the target class over to their own class) under normal training and under T&R. The paper's figure: under normal
    training the poisoned images drift to the target class (ratio below 1), under T&R they stay with their own class
    (ratio above 1)."""
    if normal < 1 <= trap:
        return "the paper's pattern: nearer the target class under normal training, nearer their own class under T&R"
    if normal < 1:
        return ("not the paper's pattern: nearer the target class under normal training, but also under T&R, whose "
                "stem should keep them with their own class")
    if trap < 1:
        return ("the reverse of the paper's pattern: nearer their own class under normal training, nearer the target "
                "class under T&R")
    return ("not the paper's pattern: nearer their own class in both models, so normal training shows no drift to "
            "the target class for T&R to prevent" + (" (T&R's ratio is the higher)" if trap > normal else ""))
