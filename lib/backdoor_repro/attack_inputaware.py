"""Input-aware's training loop (BackdoorBench ``attack/inputaware.py``; the batch and the quirks are
:mod:`.attacks.inputaware_loop`): ``mask_epochs`` of mask pre-training, then the classifier and the pattern generator
trained together with the mask network frozen.

* The mask stage runs on the shared supervised loop (:func:`~backdoor_repro.train.train_model`, resumable): the mask
  network is its model, Adam with the loop's betas is its optimizer (a parameter group's own ``betas``), the second
  shuffle is drawn from the loop's generator at each epoch's first step. Its result is saved beside the stage's
  checkpoint, so a resumed run does not repeat it.
* The joint stage has two optimizers (SGD for the classifier, Adam for the generator) and, by default, the
  generator's gradients carried from batch to batch; the shared loop steps one optimizer, so this stage is its own
  short loop on the shared resume machinery (:class:`~backdoor_repro.resume.EpochCheckpoint`: both networks, both
  optimizers, the generator's running gradients, the random streams).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .attacks import Attack
from .attacks.inputaware_loop import InputAwareLoop, Normaliser, joint_loss, mask_loss
from .attacks.wanet_inloop import batch_counts
from .augment import augment, to_float
from .cache import artifact_key, atomic_save, verified_load
from .datasets import is_cifar10
from .fast_step import adam, current_lr, load_optimizer_state, set_lr
from .resume import EpochCheckpoint, checkpoint_key
from .train import (Objective, TrainConfig, TrainResult, autocast, bf16_on, epoch_learning_rates, make_optimizer,
                    model_input, prepare_model, shuffled_batches, train_model)


def loop_augmentation(loop: InputAwareLoop, dataset: str) -> str:
    """BackdoorBench's train transform: RandomCrop(padding 4), plus a horizontal flip on CIFAR-10 only."""
    if loop.augmentation is not None:
        return loop.augmentation
    return "crop_flip" if is_cifar10(dataset) else "crop"


def mask_config(loop: InputAwareLoop, schedule: TrainConfig, augmentation: str, small_run: bool = False) -> TrainConfig:
    """The mask stage: Adam at lr_M without weight decay, MultiStepLR at milestones_M, ``mask_epochs`` epochs (in a
    small run, cut like every stage: at most the schedule's epochs)."""
    epochs = min(loop.mask_epochs, schedule.epochs) if small_run else loop.mask_epochs
    return schedule.with_(epochs=epochs, lr=loop.lr_m, optimizer="adam", weight_decay=0.0,
                          schedule="multistep", milestones=tuple(loop.milestones_m), gamma=loop.gamma,
                          augmentation=augmentation, compile=False)


class MaskObjective(Objective):
    """The mask network's loss on the loop's batch ``x1`` and the same-numbered batch of a second shuffle."""

    def __init__(self, loop: InputAwareLoop, images: torch.Tensor, cfg: TrainConfig):
        self.loop, self.images, self.cfg = loop, images, cfg
        self.norm = Normaliser(loop, images.device)
        self.step, self.second = 0, None

    def parameters(self, model):
        return [{"params": list(model.parameters()), "betas": tuple(self.loop.betas)}]

    def start_epoch(self, epoch: int) -> None:
        self.step, self.second = 0, None

    def loss(self, model, x, y, gen, idx):
        if self.second is None:  # the second loader's shuffle of this epoch
            self.second = torch.randperm(self.images.shape[0], device=self.images.device, generator=gen)
        start = self.step * self.cfg.batch_size
        self.step += 1
        x2 = augment(to_float(self.images[self.second[start:start + x.shape[0]]]), self.cfg.augmentation, gen)
        return mask_loss(model, self.norm(x), self.norm(model_input(x2)), self.loop), None


def _side_file(checkpoint, suffix: str) -> Path | None:
    return Path(checkpoint).with_name(Path(checkpoint).name + suffix) if checkpoint else None


def train_mask(net_m, images, labels, loop: InputAwareLoop, cfg: TrainConfig, checkpoint, progress: bool) -> list:
    """The mask stage (in place on ``net_m``); returns its history. A finished stage is kept at
    ``<checkpoint>.mask`` (keyed by its config and data) until the whole build ends."""
    done_path = _side_file(checkpoint, ".mask")
    key = checkpoint_key(artifact_key("inputaware_mask", {"cfg": cfg, "loop": loop, "n": images.shape[0]}, 1),
                         (images, labels), images.device)
    done = verified_load(done_path, map_location=images.device) if done_path else None
    if done is not None and done.get("config_key") == key:
        net_m.load_state_dict(done["mask"])
        return list(done["history"])
    result = train_model(net_m, images, labels, cfg, checkpoint=_side_file(checkpoint, ".mask-epochs"),
                         progress=progress, desc="inputaware masks", objective=MaskObjective(loop, images, cfg))
    if done_path:
        atomic_save({"config_key": key, "mask": net_m.state_dict(), "history": result.history}, done_path)
        _remove(_side_file(checkpoint, ".mask-epochs"))
    return result.history


def _remove(path: Path | None) -> None:
    if path is not None:
        for leftover in (path, path.with_name(path.name + ".sha256")):
            leftover.unlink(missing_ok=True)


class _Optimizers:
    """The joint stage's two optimizers as one ``state_dict`` for :class:`EpochCheckpoint`."""

    def __init__(self, opt_c, opt_g):
        self.opt_c, self.opt_g = opt_c, opt_g

    def state_dict(self) -> dict:
        return {"C": self.opt_c.state_dict(), "G": self.opt_g.state_dict()}


class JointRun:
    """The joint stage's state: the classifier (``nets["C"]``, SGD on the classifier's schedule), the pattern
    generator (``nets["G"]``, Adam at lr_G, milestones_G), the frozen mask network (``nets["M"]``), one generator."""

    def __init__(self, nets, images, labels, cfg: TrainConfig, attack: Attack, num_classes: int, augmentation: str):
        device, loop = images.device, attack.training
        self.nets, self.images, self.labels, self.cfg, self.loop = nets, images, labels, cfg, loop
        self.augmentation, self.rate = augmentation, attack.rate
        self.net_c, self.step_c = prepare_model(nets["C"], device, cfg)
        self.net_g, self.net_m = nets["G"].to(device), nets["M"].to(device)
        self.net_m.eval().requires_grad_(False)  # as netM.eval(); netM.requires_grad_(False) after the mask stage
        self.opt_c = make_optimizer(self.net_c.parameters(), cfg, device)
        self.opt_g = adam(self.net_g.parameters(), loop.lr_g, device, betas=tuple(loop.betas))
        self.cfg_g = cfg.with_(lr=loop.lr_g, milestones=tuple(loop.milestones_g))  # the generator's lr table
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.norm = Normaliser(loop, device)
        self.attack_labels = lambda y: attack.poisoned_labels(y, num_classes)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.step_c(model_input(x, self.cfg.channels_last))

    def step(self, i1: torch.Tensor, i2: torch.Tensor, lr_c, lr_g):
        """One batch: ``x1`` of the first shuffle, ``x2`` of the second; both optimizers step."""
        set_lr(self.opt_c, lr_c)
        set_lr(self.opt_g, lr_g)
        x1 = augment(to_float(self.images[i1]), self.augmentation, self.gen)
        x2 = augment(to_float(self.images[i2]), self.augmentation, self.gen)
        num_bd, _ = batch_counts(i1.shape[0], self.rate, 1.0, self.gen)  # num_cross = num_bd
        with autocast(self.images.device, self.cfg.amp):
            loss, logits, targets = joint_loss(self.classify, self.net_g, self.net_m, x1, x2, self.labels[i1], num_bd,
                                               self.attack_labels, self.loop, self.norm)
        self.opt_c.zero_grad(set_to_none=True)
        if not self.loop.accumulate_generator_grads:  # quirk: the official step never zeroes the generator's
            self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_c.step()
        self.opt_g.step()
        return loss.detach(), (logits.argmax(1) == targets).sum()

    def epoch(self, epoch: int) -> dict:
        self.net_c.train()
        self.net_g.train()
        device, n = self.images.device, self.images.shape[0]
        first = shuffled_batches(n, self.cfg.batch_size, self.gen, device, self.cfg.drop_last)
        second = shuffled_batches(n, self.cfg.batch_size, self.gen, device, self.cfg.drop_last)
        lr_c = epoch_learning_rates(self.cfg, epoch, len(first), device)
        lr_g = epoch_learning_rates(self.cfg_g, epoch, len(first), device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for step, (i1, i2) in enumerate(zip(first, second)):
            loss, hits = self.step(i1, i2, lr_c[step], lr_g[step])
            loss_sum += loss * i1.shape[0]
            correct += hits
        seen = sum(int(b.shape[0]) for b in first)
        return {"epoch": epoch + 1, "train_loss": loss_sum.item() / seen, "train_acc": 100 * correct.item() / seen,
                "lr": current_lr(self.opt_c), "lr_g": current_lr(self.opt_g)}

    def resume(self, ckpt: EpochCheckpoint) -> tuple[int, list]:
        saved = ckpt.load()
        if saved is None:
            return 0, []
        self.nets.load_state_dict(saved["model"])
        load_optimizer_state(self.opt_c, saved["optimizer"]["C"])
        load_optimizer_state(self.opt_g, saved["optimizer"]["G"])
        self.gen.set_state(saved["generator"].cpu())
        for param, grad in zip(self.net_g.parameters(), saved["generator_grads"]):
            param.grad = None if grad is None else grad.to(param.device)
        return int(saved["epoch"]), list(saved["history"])

    def save(self, ckpt: EpochCheckpoint, epoch: int, history: list) -> None:
        ckpt.after_epoch(epoch, self.nets, _Optimizers(self.opt_c, self.opt_g), self.gen, history=history,
                         generator_grads=[p.grad for p in self.net_g.parameters()])


def train_joint(nets, images, labels, cfg: TrainConfig, attack: Attack, num_classes: int, augmentation: str,
                checkpoint=None) -> TrainResult:
    """The joint stage over ``cfg.epochs`` epochs, resumable from ``checkpoint`` (its progress lines: the
    checkpoint's, as every resumable loop's)."""
    run = JointRun(nets, images, labels, cfg, attack, num_classes, augmentation)
    config = {"cfg": cfg, "loop": attack.training, "n": images.shape[0], "num_classes": num_classes,
              "attack": (attack.target, attack.rate, attack.label_mode), "augmentation": augmentation,
              "bf16": bf16_on(images.device, cfg.amp)}
    ckpt = EpochCheckpoint(checkpoint, artifact_key("inputaware_joint", config, 1), cfg.checkpoint_every, cfg.epochs,
                           images.device, data=(images, labels))
    start, history = run.resume(ckpt)
    for epoch in range(start, cfg.epochs):
        history.append(run.epoch(epoch))
        run.save(ckpt, epoch + 1, history)
    run.net_c.eval()
    run.net_g.eval()
    seconds = ckpt.seconds
    seen = (cfg.epochs - start) * images.shape[0]
    return TrainResult(history, seconds, seen / seconds if seconds > 0 else 0.0, run.opt_c)


def _cpu_state(net: torch.nn.Module) -> dict:
    return {name: value.detach().cpu().clone() for name, value in net.state_dict().items()}


def train_inputaware(spec, attack: Attack, model, images, labels, checkpoint=None, progress: bool = True):
    """The whole loop on the clean ``images``: ``(TrainResult of the joint stage, extras)``; the extras hold the
    trained pattern and mask generators (the test trigger, ``InputAwareLoop.trigger_from_training``) and the mask
    stage's history."""
    loop: InputAwareLoop = attack.training
    if images.shape[-1] % 2 ** loop.generator_steps or images.shape[-2] % 2 ** loop.generator_steps:
        raise ValueError(f"{attack.key}: the generators pool {loop.generator_steps} times by 2, so the image sides "
                         f"must be multiples of {2 ** loop.generator_steps}, not {tuple(images.shape[-2:])}")
    augmentation = loop_augmentation(loop, spec.dataset)
    cfg = spec.attacker_schedule()
    net_g, net_m = loop.networks(images.shape[1])
    mask_cfg = mask_config(loop, cfg, augmentation, spec.small_run is not None)  # small_run is in the stage's key
    mask_history = train_mask(net_m, images, labels, loop, mask_cfg, checkpoint, progress)
    nets = torch.nn.ModuleDict({"C": model, "G": net_g, "M": net_m})
    result = train_joint(nets, images, labels, cfg, attack, spec.num_classes, augmentation, checkpoint)
    _remove(_side_file(checkpoint, ".mask"))
    return result, {"generator": _cpu_state(net_g), "mask": _cpu_state(net_m), "mask_history": mask_history}
