"""Training throughput of the companion's loops against the plain torchvision DataLoader pipeline.

Stages (``--stage``): ``supervised`` (SGD + CE, random crop + flip), ``simclr`` (DBD stage 1: two SimCLR
views per image, DBD's loss), ``mixmatch`` (DBD stage 3: 64 labeled + 64 unlabeled images per step,
two views of the unlabeled ones), ``tr_trap`` (T&R stage 1: WRN-16-1 with its reconstruction decoder,
Adam, batch 256) and ``ssctl`` (FCT D-ST's encoder: two SupContrast views, SupCon with the SS-CTL mask,
batch 512). Each stage trains the same network with the same step both ways. ``fmp_rank`` is not training: FMP's
ranking of every feature map of a PreAct-ResNet-18 (32 images, one FGSM step per map), one map per forward pass
as the official code does it, against ours, many maps per pass (feature maps per second; same scores).
The baseline is what the official code does: PIL images, torchvision transforms per sample in DataLoader
workers, fp32. Ours: uint8 data resident on the device, batched on-device augmentation, bf16 autocast +
channels_last on CUDA, optional torch.compile. Both are measured in the same run and the ratio printed
(source images per second); nothing here is a timed test.

    python scripts/benchmark.py --stage all                     # CPU-sized: width 8, 2,000 smoke images
    python scripts/benchmark.py --stage all --width 64 --data-root DIR --n 50000 --workers 8 --out bench.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

import backdoor_repro as br
from backdoor_repro.train import gpu_bf16, set_gpu_bf16
from backdoor_repro import fast_step
from backdoor_repro.models import CIFAR10_MEAN, CIFAR10_STD_DBD
from backdoor_repro.defenses.dbd_stages import (FinetuneConfig, SelfSupervised, SimCLRConfig, mixmatch_step,
                                                train_iterations, train_simclr)
from backdoor_repro.defenses.fct import EncoderConfig, SSCTLObjective
from backdoor_repro.defenses.fmp_rank import rank_feature_maps, rank_one_at_a_time, total_maps
from backdoor_repro.defenses.trap_and_replace import TrapConfig, TrapObjective
from backdoor_repro.losses import simclr_loss_dbd, supcon_loss, supcon_positive_mask, total_variation
from backdoor_repro.models import ContrastiveEncoder
from backdoor_repro.report import provenance
from backdoor_repro.train import prepare_model


class ArrayDataset(torch.utils.data.Dataset):
    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def baseline_images_per_second(images, labels, args, device) -> float:
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR10_MEAN, CIFAR10_STD_DBD)])
    data = ArrayDataset(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), transform)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    model = br.build_model("resnet18", 10, args.width).to(device)
    model.normalize = torch.nn.Identity()  # the transform already normalises
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def epoch():
        seen = 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += y.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return seen

    epoch()  # warm-up (worker start, cudnn autotune)
    start, seen = time.perf_counter(), 0
    for _ in range(args.epochs):
        seen += epoch()
    return seen / (time.perf_counter() - start)


def ours_images_per_second(images, labels, args, device) -> float:
    images, labels = images.to(device), labels.to(device)
    cfg = br.TrainConfig(epochs=1, batch_size=args.batch_size, lr=0.1, schedule="constant",
                         augmentation="crop_flip", compile=args.compile)
    model = br.build_model(args.model, 10, args.width)
    br.train_model(model, images, labels, cfg, progress=False)  # warm-up (compile, autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    br.train_model(model, images, labels, cfg.with_(epochs=args.epochs), progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.epochs * len(labels) / (time.perf_counter() - start)


def simclr_baseline(images, labels, args, device) -> float:
    view = T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                      T.RandomGrayscale(p=0.2), T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 2.0))], p=0.5),
                      T.ToTensor()])
    data = ArrayDataset(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), lambda im: torch.stack([view(im), view(im)]))
    loader = torch.utils.data.DataLoader(data, batch_size=args.simclr_batch, shuffle=True, num_workers=args.workers,
                                         pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    model, opt = _simclr_model(args, device)

    def epoch():
        for views, _ in loader:
            views = views.to(device, non_blocking=True)
            z1, z2 = model(torch.cat([views[:, 0], views[:, 1]])).chunk(2)  # one forward, as the official step
            loss = simclr_loss_dbd(z1, z2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return _timed(epoch, args.epochs, len(labels), device)


def simclr_ours(images, labels, args, device) -> float:
    images = images.to(device)
    model, _ = _simclr_model(args, device)
    cfg = SimCLRConfig(epochs=1, schedule_epochs=10, batch_size=args.simclr_batch, compile=args.compile)
    train_simclr(model, images, cfg, seed=0)  # warm-up
    return _timed(lambda: train_simclr(model, images, cfg, seed=1), args.epochs, len(labels), device, warm=False)


def _simclr_model(args, device):
    clf = br.build_model("resnet18", 10, args.width)
    model = SelfSupervised(clf.backbone, clf.normalize, 128).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.4, momentum=0.9, weight_decay=1e-4)


def mixmatch_baseline(images, labels, args, device) -> float:
    aug = T.Compose([T.RandomCrop(32, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip(), T.ToTensor()])
    hwc, half = images.permute(0, 2, 3, 1).numpy(), len(labels) // 2
    labeled = ArrayDataset(hwc[:half], labels[:half].numpy(), aug)
    unlabeled = ArrayDataset(hwc[half:], labels[half:].numpy(), lambda im: torch.stack([aug(im), aug(im)]))
    kw = dict(batch_size=64, shuffle=True, drop_last=True, num_workers=args.workers // 2 or 0,
              pin_memory=device.type == "cuda", persistent_workers=args.workers > 1)
    lab_loader, unl_loader = torch.utils.data.DataLoader(labeled, **kw), torch.utils.data.DataLoader(unlabeled, **kw)
    model = br.build_model("resnet18", 10, args.width).to(device)
    opt, cfg, rng = torch.optim.Adam(model.parameters(), lr=0.002), FinetuneConfig(), np.random.default_rng(0)
    gen = torch.Generator(device=device).manual_seed(0)
    steps = min(len(lab_loader), len(unl_loader))

    def epoch():
        model.train()
        for (x, y), (u, _) in zip(lab_loader, unl_loader):
            x, y, u = x.to(device), y.to(device), u.to(device)
            mixmatch_step(model, opt, x, y, u[:, 0], u[:, 1], cfg, rng, gen, 1.0)

    bf16 = gpu_bf16()
    set_gpu_bf16(False)  # the baseline in fp32, as the official code (mixmatch_step opens its own autocast)
    try:
        return _timed(epoch, args.epochs, steps * 128, device)
    finally:
        set_gpu_bf16(bf16)


def mixmatch_ours(images, labels, args, device) -> float:
    images, labels = images.to(device), labels.to(device)
    cfg, rng = FinetuneConfig(compile=args.compile), np.random.default_rng(0)
    model, step_model = prepare_model(br.build_model("resnet18", 10, args.width), device, cfg)  # channels_last
    opt = fast_step.adam(model.parameters(), 0.002, device)  # fused, device-tensor lr on CUDA
    gen = torch.Generator(device=device).manual_seed(0)
    half = len(labels) // 2
    steps = half // 64
    lab = torch.arange(half, device=device)[: steps * 64].view(steps, 64)
    unl = torch.arange(half, 2 * half, device=device)[: steps * 64].view(steps, 64)
    run = lambda: train_iterations(step_model, opt, images, labels, lab, unl, cfg, gen, rng, 1)  # noqa: E731
    return _timed(run, args.epochs, steps * 128, device)


def _trap_model(args, device):
    model = br.build_model("wrn16", 10, args.tr_width, decoder=True).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)


def tr_trap_baseline(images, labels, args, device) -> float:
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])  # no normalisation
    data = ArrayDataset(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), transform)
    loader = torch.utils.data.DataLoader(data, batch_size=256, shuffle=True, drop_last=True, num_workers=args.workers,
                                         pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    model, opt = _trap_model(args, device)

    def epoch():
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits, rec = model.forward_with_reconstruction(x)
            loss = F.cross_entropy(logits, y) + 10 * F.mse_loss(rec, x) + total_variation(rec)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return _timed(epoch, args.epochs, (len(labels) // 256) * 256, device)


def tr_trap_ours(images, labels, args, device) -> float:
    images, labels = images.to(device), labels.to(device)
    model, _ = _trap_model(args, device)
    cfg = TrapConfig(epochs=1).train_config(seed=0).with_(compile=args.compile)
    objective = TrapObjective(10.0, 1.0)
    run = lambda: br.train_model(model, images, labels, cfg, progress=False, objective=objective)  # noqa: E731
    return _timed(run, args.epochs, (len(labels) // 256) * 256, device)


def _ssctl_model(args, device):
    clf = br.build_model("resnet18", 10, args.width)
    model = ContrastiveEncoder(clf.backbone, clf.normalize, 128, batch_norm=False).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)


def _flags(n):
    return torch.as_tensor(np.random.default_rng(0).integers(0, 3, n))  # D_c / D_u / D_p, as SD would give


class IndexedDataset(ArrayDataset):
    """Also returns the sample index (the SD flags are looked up per sample)."""

    def __getitem__(self, i):
        image, label = super().__getitem__(i)
        return image, label, i


def ssctl_baseline(images, labels, args, device) -> float:
    view = T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
                      T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                      T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD_DBD)])
    flags = _flags(len(labels)).to(device)
    data = IndexedDataset(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), lambda im: torch.stack([view(im), view(im)]))
    loader = torch.utils.data.DataLoader(data, batch_size=args.simclr_batch, shuffle=True, num_workers=args.workers,
                                         pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    model, opt = _ssctl_model(args, device)
    model.normalize = torch.nn.Identity()  # the transform already normalises

    def epoch():
        model.train()
        for views, y, idx in loader:
            views, y, idx = views.to(device, non_blocking=True), y.to(device), idx.to(device)
            z1, z2 = model(torch.cat([views[:, 0], views[:, 1]])).chunk(2)
            loss = supcon_loss(z1, z2, supcon_positive_mask(y, flags[idx], "code"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return _timed(epoch, args.epochs, len(labels), device)


def ssctl_ours(images, labels, args, device) -> float:
    images, labels = images.to(device), labels.to(device)
    model, _ = _ssctl_model(args, device)
    cfg = EncoderConfig(epochs=1, batch_size=args.simclr_batch, warmup_epochs=0).train_config(seed=0)
    objective = SSCTLObjective(_flags(len(labels)).to(device), EncoderConfig())
    run = lambda: br.train_model(model, images, labels, cfg.with_(compile=args.compile), progress=False,  # noqa: E731
                                      objective=objective)
    return _timed(run, args.epochs, len(labels), device)


def _ranking(rank_fn, images, labels, args, device) -> float:
    """Feature maps ranked per second by ``rank_fn`` on a PreAct-ResNet-18 at ``--width`` and 32 images."""
    model = br.build_model("preact_resnet18", 10, args.width).to(device).eval()
    x, y = images[:32].to(device).float() / 255, labels[:32].to(device)
    run = lambda: rank_fn(model, x, y, 0.02, 0.06, torch.Generator(device=device).manual_seed(0))  # noqa: E731
    return _timed(run, 1, total_maps(model), device)


def fmp_rank_baseline(images, labels, args, device) -> float:
    return _ranking(rank_one_at_a_time, images, labels, args, device)


def fmp_rank_ours(images, labels, args, device) -> float:
    return _ranking(rank_feature_maps, images, labels, args, device)


def _timed(epoch_fn, epochs: int, images_per_epoch: int, device, warm: bool = True) -> float:
    if warm:
        epoch_fn()  # warm-up: worker start, autotuning, compilation
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        epoch_fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return epochs * images_per_epoch / (time.perf_counter() - start)


STAGES = {"supervised": (baseline_images_per_second, ours_images_per_second),
          "simclr": (simclr_baseline, simclr_ours),
          "mixmatch": (mixmatch_baseline, mixmatch_ours),
          "tr_trap": (tr_trap_baseline, tr_trap_ours),
          "ssctl": (ssctl_baseline, ssctl_ours),
          "fmp_rank": (fmp_rank_baseline, fmp_rank_ours)}
UNITS = {"fmp_rank": "feature maps"}  # the others: source images


def measure(stage: str, images, labels, args, device) -> dict:
    """One stage both ways (ours only with ``--ours-only``), printed and returned as a result row."""
    baseline, ours = STAGES[stage]
    fast = ours(images, labels, args, device)
    unit = UNITS.get(stage, "images")
    if args.ours_only:
        print(f"{stage:10s} ours: {fast:9.1f} {unit}/s")
        return {"stage": stage, "unit": f"{unit} per second", "ours_per_s": round(fast, 1)}
    base = baseline(images, labels, args, device)
    reference = "one map per pass" if stage == "fmp_rank" else "torchvision DataLoader"
    print(f"{stage:10s} {reference}: {base:9.1f} {unit}/s | ours: {fast:9.1f} {unit}/s | speed-up {fast / base:.2f}x")
    return {"stage": stage, "unit": f"{unit} per second", "baseline_per_s": round(base, 1),
            "ours_per_s": round(fast, 1), "speedup": round(fast / base, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", default="supervised", choices=[*STAGES, "all"])
    ap.add_argument("--simclr-batch", type=int, default=512)
    ap.add_argument("--data-root", default=None, help="full CIFAR-10 (torchvision root or image-folder tree)")
    ap.add_argument("--n", type=int, default=2000, help="training images used")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--tr-width", type=int, default=16, help="WRN-16 base width for tr_trap (16 = WRN-16-1)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    ap.add_argument("--model", default="resnet18", help="the supervised stage's network (ours only): resnet18, "
                    "resnet18_maxpool, preact_resnet18, wrn16")
    ap.add_argument("--ours-only", action="store_true", help="skip the DataLoader baseline (sizing a schedule)")
    args = ap.parse_args()
    device = br.resolve_device(args.device)
    name = "cifar10" if args.data_root else "cifar10-smoke"
    train = br.load_dataset(name, "train", args.data_root)
    if args.n > len(train):
        raise SystemExit(f"--n {args.n} exceeds the {len(train)} images of {name}")
    images, labels = train.images[: args.n], train.labels[: args.n]
    results = []
    for stage in (STAGES if args.stage == "all" else [args.stage]):
        torch.manual_seed(0)
        results.append(measure(stage, images, labels, args, device))
    result = provenance(benchmark="throughput per stage (training; FMP ranking)", dataset=name, n=args.n, width=args.width,
                        tr_width=args.tr_width,
                        batch_size=args.batch_size, simclr_batch=args.simclr_batch, epochs=args.epochs,
                        workers=args.workers, compile=args.compile, model=args.model, ours_only=args.ours_only,
                        results=results)
    print(f"({result['device']}, torch {torch.__version__})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
