"""FMP's feature-map ranking and pruning (Huang & Bu, ICLR 2024; official ``defense/fgsm-feature.py``).

For every feature map (output channel ``c`` of convolution ``l``): from a random start ``x0`` near the ranking
batch ``x``, one FGSM step of size ``epsilon`` that maximises the mean squared change of that map alone,
``x_lc = clip(x0 + epsilon * sign(grad_x0 mean((F_lc(x0) - F_lc(x))^2)), 0, 1)``; the map's score is the
model's accuracy on ``x_lc`` against the true labels. Low scores mark the maps whose perturbation most drives
predictions away from the truth; FMP zeroes the ``floor(C_l / divisor)`` lowest of each convolution.

:func:`rank_feature_maps` does this for many maps per forward pass: the ranking batch is repeated once per map
of a chunk, each copy's loss looks at its own map, and the summed loss's gradient with respect to each copy is
that copy's own gradient (the network is in eval mode, so copies do not interact). :func:`rank_one_at_a_time`
is the plain loop, kept as the reference the batched one is tested against. A PreAct block's conv2 maps are read
where the official hook reads them, after the in-place residual add, unless ``conv2_map="own_output"``.
"""
from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..cache import atomic_save, resumed_from, verified_load
from ..feature_maps import ConvLayer, capture_output, conv_layers, execution_order, feature_map_site, forward_to
from ..deadline import check_time_budget
from ..train import model_input

PRUNE_ORDERS = ("official", "by_name")
# where a PreAct block's conv2 maps are read: after the official in-place residual add (``out += shortcut`` makes its
# hook see the block's output) or at the convolution's own output (the method as described)
CONV2_MAPS = ("residual_sum", "own_output")


def check_conv2_map(conv2_map: str) -> None:
    if conv2_map not in CONV2_MAPS:
        raise ValueError(f"conv2_map must be one of {CONV2_MAPS}, got {conv2_map!r}")


def ranking_site(model: nn.Module, conv: str, conv2_map: str = "residual_sum") -> str:
    """The module whose output holds ``conv``'s feature maps for the ranking: :func:`feature_map_site` (the official
    hook's view) or, with ``conv2_map="own_output"``, the convolution itself."""
    check_conv2_map(conv2_map)
    return feature_map_site(model, conv) if conv2_map == "residual_sum" else conv


def random_start(x: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """``clip(x + alpha * sign(u), 0, 1)`` with ``u`` uniform in (-alpha, alpha), per pixel."""
    u = (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * alpha
    return (x + alpha * torch.sign(u)).clamp(0, 1)


def ranking_input(model: nn.Module, x: torch.Tensor, double_norm: bool) -> torch.Tensor:
    """What the ranking perturbs and clips to [0, 1]: the images, or (the official code's double normalisation)
    the already-normalised images, which the model then normalises a second time."""
    return model.normalize(x) if double_norm else x


def _clean_and_start(model, x, alpha, gen, double_norm):
    """Eval mode; the ranking's clean input and its random start (shared by both ranking loops)."""
    model.eval()
    z = ranking_input(model, x, double_norm).detach()
    return z, random_start(z, alpha, gen)


def _fgsm_scores(model, site, channels, x0, clean_maps, y, epsilon) -> torch.Tensor:
    """Accuracy (fraction) on the FGSM images of each channel in ``channels``; one forward/backward for all."""
    k, b = len(channels), x0.shape[0]
    xk = model_input(x0.repeat(k, 1, 1, 1)).requires_grad_(True)  # channels_last on CUDA (the ranking stays fp32)
    out = forward_to(model, site, xk).float()
    idx = torch.as_tensor(channels, device=x0.device)
    mine = out.view(k, b, *out.shape[1:])[torch.arange(k, device=x0.device), :, idx]  # (k, b, H, W)
    target = clean_maps[:, idx].transpose(0, 1)  # (k, b, H, W)
    loss = ((mine - target) ** 2).mean(dim=(1, 2, 3)).sum()
    grad, = torch.autograd.grad(loss, xk)
    with torch.no_grad():
        adv = (xk + epsilon * grad.sign()).clamp(0, 1)
        correct = model(adv).argmax(1).view(k, b) == y.view(1, b)
    return correct.float().mean(1)


def default_chunk(device: torch.device, images: int) -> int:
    """Maps per forward pass: about 4,096 images per pass on CUDA; on a CPU about 128 (measured on 2 cores with
    the width-8 smoke network: 4 maps x 32 images per pass ranks 2.3x faster than 64 x 32, which leaves the
    caches)."""
    per_pass = 4096 if torch.device(device).type == "cuda" else 128
    return max(1, per_pass // max(1, images))


def rank_feature_maps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float, epsilon: float,
                      gen: torch.Generator, double_norm: bool = True, chunk: int | None = None,
                      checkpoint=None, conv2_map: str = "residual_sum") -> dict[str, torch.Tensor]:
    """Score of every feature map, ``{conv name: (C,) accuracies}`` in forward order. ``x``: the ranking batch
    (float in [0, 1]); one random start shared by all maps; ``chunk`` maps per forward pass (None: by device,
    :func:`default_chunk`); ``conv2_map``: where a PreAct conv2's maps are read (:func:`ranking_site`). With
    ``checkpoint`` (a path) the scores so far are saved after every convolution, and a rerun with the same inputs
    ranks only the convolutions still missing."""
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of maps, got {chunk}")
    check_conv2_map(conv2_map)
    chunk = chunk or default_chunk(x.device, x.shape[0])
    with strict_fp32():
        return _rank(model, x, y, alpha, epsilon, gen, double_norm, chunk, checkpoint, conv2_map)


def strict_fp32():
    """cuDNN convolutions without TF32 (torch's default allows it on Ampere and later GPUs): sign(∇) near ties
    would flip at TF32's 10-bit mantissa as they would in bf16. No effect on the CPU."""
    return torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False)


def _ranking_inputs_key(x0: torch.Tensor, y: torch.Tensor, epsilon: float) -> str:
    """What a saved partial ranking must have been computed from (its start, labels and step)."""
    digest = hashlib.sha256(x0.detach().float().cpu().numpy().tobytes())
    digest.update(y.cpu().numpy().tobytes())
    return f"{digest.hexdigest()}-{epsilon!r}"


def _ranked_so_far(checkpoint, inputs_key: str) -> tuple[dict[str, torch.Tensor], float]:
    """The scores a killed attempt saved and the seconds it ranked for (none: another input's ranking)."""
    saved = verified_load(Path(checkpoint)) if checkpoint is not None else None
    if saved is None:
        return {}, 0.0
    if saved.get("inputs") != inputs_key:
        warnings.warn(f"ignoring the partial ranking {Path(checkpoint).name}: it was computed from other inputs")
        return {}, 0.0
    earlier = float(saved.get("elapsed", 0.0))
    resumed_from(checkpoint, earlier)  # the ranking's build counts that time (cache.py)
    return dict(saved["scores"]), earlier


def _rank(model, x, y, alpha, epsilon, gen, double_norm, chunk, checkpoint=None,
          conv2_map="residual_sum") -> dict[str, torch.Tensor]:
    z, x0 = _clean_and_start(model, x, alpha, gen, double_norm)
    inputs_key = _ranking_inputs_key(x0, y, epsilon) if checkpoint is not None else ""
    started = time.perf_counter()
    done, earlier = _ranked_so_far(checkpoint, inputs_key)
    scores = {}
    for layer in conv_layers(model, tuple(x.shape[1:])):
        if layer.name in done:
            scores[layer.name] = done[layer.name]
            continue
        site = ranking_site(model, layer.name, conv2_map)
        with torch.no_grad():
            clean_maps = forward_to(model, site, z).float()
        parts = [_fgsm_scores(model, site, list(range(s, min(s + chunk, layer.channels))), x0, clean_maps, y,
                              epsilon) for s in range(0, layer.channels, chunk)]
        scores[layer.name] = torch.cat(parts).cpu()
        if checkpoint is not None:
            atomic_save({"scores": scores, "inputs": inputs_key, "elapsed": earlier + time.perf_counter() - started},
                        Path(checkpoint))
            check_time_budget(f"the feature maps of {layer.name} ({Path(checkpoint).name})")
    return scores


def rank_one_at_a_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float, epsilon: float,
                       gen: torch.Generator, double_norm: bool = True,
                       conv2_map: str = "residual_sum") -> dict[str, torch.Tensor]:
    """The reference loop: per map, a full forward on ``x0`` with a hook, the map's loss, its own gradient."""
    z, x0 = _clean_and_start(model, x, alpha, gen, double_norm)
    scores = {}
    for layer in conv_layers(model, tuple(x.shape[1:])):
        site = ranking_site(model, layer.name, conv2_map)
        with torch.no_grad(), capture_output(model, site) as captured:
            model(z)
            clean = captured[0].float()
        values = []
        for c in range(layer.channels):
            xa = x0.clone().requires_grad_(True)
            with capture_output(model, site) as captured:
                model(xa)
            loss = ((captured[0].float()[:, c] - clean[:, c]) ** 2).mean()
            grad, = torch.autograd.grad(loss, xa)
            with torch.no_grad():
                adv = (xa + epsilon * grad.sign()).clamp(0, 1)
                values.append((model(adv).argmax(1) == y).float().mean())
        scores[layer.name] = torch.stack(values).cpu()
    return scores


def lowest_maps(scores: dict[str, torch.Tensor], divisor: int) -> dict[str, list[int]]:
    """Per convolution (forward order), its ``floor(C / divisor)`` lowest-scoring maps: a stable ascending sort,
    ties in channel order."""
    if divisor < 1:
        raise ValueError(f"divisor must be a positive integer, got {divisor}")
    return {name: torch.sort(s, stable=True).indices[: s.numel() // divisor].tolist() for name, s in scores.items()}


def prune_plan(model: nn.Module, chosen: dict[str, list[int]], order: str = "official",
               image_shape=(3, 32, 32)) -> dict[str, list[int]]:
    """Which channels are zeroed in which module (convolutions: filters; BatchNorms: γ), from the lists ranked per
    convolution (``chosen``, keyed by conv name).

    ``official``: the official code walks the modules in registration order with a counter of the convolutions
    seen and hands each module the ``counter - 1``-th list of the forward-order ranking; a BatchNorm gets the list of
    the last convolution registered before it. In a block whose shortcut runs first, conv1 (and bn2) get the
    shortcut's list, conv2 conv1's, the shortcut (and the next block's bn1) conv2's; the counts agree, so nothing
    fails. ``by_name``: each convolution its own list, each BatchNorm the list of the convolution that runs just
    before it (the maps it normalises)."""
    if order not in PRUNE_ORDERS:
        raise ValueError(f"prune order must be one of {PRUNE_ORDERS}, got {order!r}")
    forward = [layer.name for layer in conv_layers(model, image_shape)]
    if sorted(forward) != sorted(chosen):
        raise ValueError("chosen must list every convolution of the model")
    plan: dict[str, list[int]] = {}
    if order == "official":
        seen = 0
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                seen += 1
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and seen:
                plan[name] = list(chosen[forward[seen - 1]])
        return plan
    last_conv = None
    for name in execution_order(model, (nn.Conv2d, nn.BatchNorm2d), image_shape):
        if isinstance(dict(model.named_modules())[name], nn.Conv2d):
            last_conv = name
            plan[name] = list(chosen[name])
        elif last_conv is not None:
            plan[name] = list(chosen[last_conv])
    return plan


@torch.no_grad()
def zero_feature_maps(model: nn.Module, plan: dict[str, list[int]]) -> int:
    """Zero the planned output filters (and bias) of each convolution and the γ of each BatchNorm (β is kept, as in
    the official code); returns the number of convolution maps zeroed. No mask: fine-tuning may regrow them."""
    modules = dict(model.named_modules())
    count = 0
    for name, channels in plan.items():
        if not channels:
            continue
        m, idx = modules[name], torch.as_tensor(channels, dtype=torch.long)
        m.weight[idx.to(m.weight.device)] = 0
        if isinstance(m, nn.Conv2d):
            if m.bias is not None:
                m.bias[idx.to(m.bias.device)] = 0
            count += len(channels)
    return count


@torch.no_grad()
def single_map_asr(model: nn.Module, triggered: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
    """For the "backdoor feature map" ground truth: the attack success rate on ``triggered`` (float images,
    non-target classes) with each feature map zeroed alone (its filter and the γ of the BatchNorm that normalises
    it, as :func:`prune_plan` ``by_name`` pairs them), ``{conv: (C,) ASR in %}``; the model is restored."""
    model.eval()
    triggered = model_input(triggered)
    modules = dict(model.named_modules())
    layers = conv_layers(model, tuple(triggered.shape[1:]))
    bn_of: dict[str, list[str]] = {}
    last_conv = None
    for name in execution_order(model, (nn.Conv2d, nn.BatchNorm2d), tuple(triggered.shape[1:])):
        if isinstance(modules[name], nn.Conv2d):
            last_conv = name
        elif last_conv is not None:
            bn_of.setdefault(last_conv, []).append(name)
    out = {}
    for layer in layers:
        conv, asr = modules[layer.name], []
        for c in range(layer.channels):
            saved = [conv.weight[c].clone()] + [modules[b].weight[c].clone() for b in bn_of.get(layer.name, [])]
            conv.weight[c] = 0
            for b in bn_of.get(layer.name, []):
                modules[b].weight[c] = 0
            asr.append((model(triggered).argmax(1) == target).float().mean() * 100)
            conv.weight[c] = saved[0]
            for b, w in zip(bn_of.get(layer.name, []), saved[1:]):
                modules[b].weight[c] = w
        out[layer.name] = torch.stack(asr).cpu()
    return out


def total_maps(model: nn.Module, image_shape=(3, 32, 32)) -> int:
    return sum(layer.channels for layer in conv_layers(model, image_shape))


__all__ = ["CONV2_MAPS", "ConvLayer", "PRUNE_ORDERS", "check_conv2_map", "default_chunk", "lowest_maps", "prune_plan",
           "rank_feature_maps", "rank_one_at_a_time", "random_start", "ranking_input", "ranking_site", "single_map_asr",
           "total_maps", "zero_feature_maps"]
