"""Two baselines of FMP's table on the same clean subset and attacked models: fine-tuning (FT) and fine-pruning
(FP; Liu et al., RAID 2018) with BackdoorBench's defaults.

FT trains every weight of the backdoored model on the clean subset. FP measures the mean activation of each
channel of the last stage's output on the clean subset, switches channels off in increasing order of activation
while the clean-subset accuracy stays within ``acc_ratio`` of the unpruned model's, then fine-tunes with the
switched-off channels held at zero. In BackdoorBench's PreAct-ResNet-18 nothing but average pooling lies between
``layer4`` and the linear layer, so switching channel c off is exactly zeroing column c of the linear weight;
a gradient hook keeps it zero during fine-tuning.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..graph import Stage
from ..pipeline import RunData, no_defense_model
from ..stages import StageOutput, cached_stage
from ..train import TrainConfig, batched_outputs
from .base import DefenseResult, register_defense
from .fmp import PROTOCOL_DEVIATIONS, FMPProtocolDefense, finetune_on_holdout

VERSIONS = {"ft": 1, "fp": 4}

# BackdoorBench's FT and FP fine-tuning as FMP's code base runs it (FMP defense/ft.py, fp.py; FMT
# config/defense/{ft,fp}/cifar10.yaml; FMT utils/aggregate_block/train_settings_generate.py): 100 epochs, batch 256
# (shuffled, last partial batch kept), SGD 0.01, momentum 0.9, wd 5e-4, CosineAnnealingLR(T_max 100) stepped per
# epoch, the train transform (crop + flip), the last epoch kept. BackdoorBench v1's ft.py hard-codes the same optimiser
# and T_max 100.
BACKDOORBENCH_FT = TrainConfig(epochs=100, batch_size=256, lr=0.01, weight_decay=5e-4, schedule="cosine_epoch",
                               augmentation="crop_flip")


@dataclass(frozen=True)
class FTConfig:
    finetune: TrainConfig = BACKDOORBENCH_FT


@dataclass(frozen=True)
class FPConfig:
    acc_ratio: float = 0.1  # stop at the first step whose clean-subset accuracy moves by acc_ratio of the unpruned one
    finetune: TrainConfig = BACKDOORBENCH_FT
    # channels per pruning step, as a fraction of the last stage's: BackdoorBench's config/defense/fp/cifar10.yaml
    # (FMT's copy of that yaml omits the key, which FMP's fp.py then needs on its command line)
    once_prune_ratio: float = 0.01

    def __post_init__(self):
        if not 0 <= self.acc_ratio < 1:
            raise ValueError(f"acc_ratio must be in [0, 1), got {self.acc_ratio}")
        if not 0 < self.once_prune_ratio <= 1:
            raise ValueError(f"once_prune_ratio must be in (0, 1], got {self.once_prune_ratio}")


_FT_30 = ("FT 30 epochs of a cosine over 30 (BackdoorBench: 100, T_max 100)",)
_FP_30 = ("FP's fine-tuning 30 epochs of a cosine over 30 (BackdoorBench: 100, T_max 100)",)
_AMP = ("fine-tuning in fp32 on the paper profile (BackdoorBench's FT and FP configs set amp: True, fp16 autocast)",)


class FineTuning(FMPProtocolDefense):
    key = "ft"
    title = "FT: fine-tune the backdoored model on the clean subset"
    configs = {"paper": FTConfig(), "fast": FTConfig(BACKDOORBENCH_FT.with_(epochs=30)),
               "cpu": FTConfig(BACKDOORBENCH_FT.with_(epochs=30)),
               "smoke": FTConfig(BACKDOORBENCH_FT.with_(epochs=20))}
    deviations = {"paper": PROTOCOL_DEVIATIONS["paper"] + _AMP,
                  "fast": PROTOCOL_DEVIATIONS["paper"] + PROTOCOL_DEVIATIONS["fast"] + _FT_30,
                  "cpu": PROTOCOL_DEVIATIONS["paper"] + PROTOCOL_DEVIATIONS["cpu"] + _FT_30,
                  "smoke": PROTOCOL_DEVIATIONS["smoke"] + ("FT 20 epochs (BackdoorBench: 100)",)}

    small_run = {"finetune": {"epochs": 1, "batch_size": 8}}

    def defend(self, spec, data: RunData, cfg: FTConfig, cache, progress) -> DefenseResult:
        nd = self.no_defense_record(spec, data, cache, progress)

        def build(partial):
            model, _ = no_defense_model(spec, None, cache, progress, data=data)
            torch.manual_seed(spec.seed)
            result = finetune_on_holdout(model, data, cfg.finetune, spec.seed, progress, "ft", partial)
            return StageOutput(model, result.history)

        stage = Stage("ft", cfg, VERSIONS["ft"], (spec.no_defense_stage(), spec.granted_stage()))
        model, record = cached_stage(cache, stage, build, spec.new_model, data.train.images.device)
        return DefenseResult(model, {"no_defense": nd, "ft": record})


@torch.no_grad()
def head_inputs(model, images) -> torch.Tensor:
    """The linear head's input for every image (eval mode, float): the spatial mean of ``backbone.layer4``'s
    output, one forward pass over ``images``."""
    model.eval()
    captured = []
    handle = model.head.register_forward_pre_hook(lambda m, args: captured.append(args[0].float()))
    try:
        batched_outputs(model, images, images.device, batch_size=500)
    finally:
        handle.remove()
    return torch.cat(captured)


def last_stage_activation(model, images) -> torch.Tensor:
    """Mean over images and positions of each channel of ``backbone.layer4``'s output (eval mode)."""
    return head_inputs(model, images).mean(0).cpu()


@torch.no_grad()
def prune_until_accuracy_drops(model, images, labels, acc_ratio: float, once_prune_ratio: float = 0.01
                               ) -> tuple[list[int], list[dict]]:
    """BackdoorBench's FP loop (``defense/fp.py``, the copy in FMP's repository): with ``step = int(C ·
    once_prune_ratio)`` (at least 1) over the last stage's C channels sorted by increasing mean activation, step
    ``n = step, 2·step, ...`` switches off the first ``n - 1`` channels (zeroes those columns of the linear weight;
    the code's ``seq_sort[0:num_pruned - 1]``) and measures the accuracy on ``images``; the loop stops at the first
    step whose relative change ``|acc - acc_0| / acc_0`` is not below ``acc_ratio``. The code's ``last_net`` is the
    pruned network itself, so the mask of that failing step (or of the last step, if none fails) is what stays.
    Returns the channels switched off and the path (channels off, accuracy). Switching channels off changes only
    the linear layer, so the features are computed once and each step re-applies the head to them (in float)."""
    features = head_inputs(model, images)
    order = torch.argsort(features.mean(0).cpu(), stable=True).tolist()
    weight = model.head.weight
    w = weight.detach().float().clone()
    bias = model.head.bias.detach().float() if model.head.bias is not None else 0
    labels = labels.to(features.device)

    def accuracy() -> float:
        return ((features @ w.t() + bias).argmax(1) == labels).float().mean().item()

    base = accuracy()
    step = max(1, int(len(order) * once_prune_ratio))
    path, off = [{"pruned": 0, "accuracy": 100 * base}], 0
    for n in range(step, len(order), step):
        off = n - 1
        w[:, order[:off]] = 0
        acc = accuracy()
        path.append({"pruned": off, "accuracy": 100 * acc})
        if base == 0 or abs(acc - base) / base >= acc_ratio:
            break
    weight[:, order[:off]] = 0
    return order[:off], path


_FP_COMMON = (
    "the pruning stops on the clean subset's accuracy (BackdoorBench stops on the clean test set's); its steps "
    "(int(1 % of the channels), at least 1; step n switching off n - 1) and the kept mask (the first failing "
    "step's) are those of the FMP repository's copy of BackdoorBench's FP (upstream BackdoorBench rounds the step "
    "up: 6 channels per step at 512, not 5)",
    "activations measured on the clean subset without augmentation (BackdoorBench: its train transform); fine-tuning "
    "trains every weight with the switched-off channels held at zero, as BackdoorBench",
)


class FinePruning(FMPProtocolDefense):
    key = "fp"
    title = "FP: prune the last stage's least active channels on the clean subset, then fine-tune"
    configs = {"paper": FPConfig(), "fast": FPConfig(finetune=BACKDOORBENCH_FT.with_(epochs=30)),
               "cpu": FPConfig(finetune=BACKDOORBENCH_FT.with_(epochs=30)),
               "smoke": FPConfig(finetune=BACKDOORBENCH_FT.with_(epochs=20))}
    deviations = {"paper": _FP_COMMON + PROTOCOL_DEVIATIONS["paper"] + _AMP,
                  "fast": _FP_COMMON + PROTOCOL_DEVIATIONS["paper"] + PROTOCOL_DEVIATIONS["fast"] + _FP_30,
                  "cpu": _FP_COMMON + PROTOCOL_DEVIATIONS["paper"] + PROTOCOL_DEVIATIONS["cpu"] + _FP_30,
                  "smoke": _FP_COMMON + PROTOCOL_DEVIATIONS["smoke"] + ("FP's fine-tuning 20 epochs (BackdoorBench: 100)",)}

    small_run = {"finetune": {"epochs": 1, "batch_size": 8}}

    def defend(self, spec, data: RunData, cfg: FPConfig, cache, progress) -> DefenseResult:
        nd = self.no_defense_record(spec, data, cache, progress)
        device = data.train.images.device

        def build(partial):
            model, _ = no_defense_model(spec, None, cache, progress, data=data)
            holdout = data.clean_holdout
            pruned, path = prune_until_accuracy_drops(model, holdout.images, holdout.labels.to(device), cfg.acc_ratio,
                                                      cfg.once_prune_ratio)
            keep = torch.ones_like(model.head.weight)
            keep[:, pruned] = 0
            handle = model.head.weight.register_hook(lambda g: g * keep)
            torch.manual_seed(spec.seed)
            try:
                result = finetune_on_holdout(model, data, cfg.finetune, spec.seed, progress, "fp", partial)
            finally:
                handle.remove()
            return StageOutput(model, result.history, {"pruned_channels": pruned, "pruning_path": path})

        stage = Stage("fp", cfg, VERSIONS["fp"], (spec.no_defense_stage(), spec.granted_stage()))
        model, record = cached_stage(cache, stage, build, spec.new_model, device)
        return DefenseResult(model, {"no_defense": nd, "fp": record})


register_defense(FineTuning())
register_defense(FinePruning())
