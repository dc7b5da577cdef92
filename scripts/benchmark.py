"""Training throughput of the companion's loop against the plain torchvision DataLoader pipeline.

Both train the same ResNet-18 with SGD on the same images with random crop (pad 4) + flip. The
baseline is what the papers' official code does: PIL images, torchvision transforms per sample in
DataLoader workers, fp32. Ours: uint8 data resident on the device, batched on-device augmentation,
bf16 autocast + channels_last on CUDA, optional torch.compile. Both are measured in the same run and
the ratio is printed; nothing here is a timed test.

    python scripts/benchmark.py                                 # CPU-sized: width 8, 2,000 smoke images
    python scripts/benchmark.py --width 64 --data-root DIR --n 50000 --epochs 3 --workers 8 --out results.json
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
from backdoor_repro.models import CIFAR10_MEAN, CIFAR10_STD_DBD
from backdoor_repro.report import provenance


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
    model = br.build_model("resnet18", 10, args.width)
    br.train_supervised(model, images, labels, cfg, progress=False)  # warm-up (compile, autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    br.train_supervised(model, images, labels, cfg.with_(epochs=args.epochs), progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.epochs * len(labels) / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="full CIFAR-10 (torchvision root or image-folder tree)")
    ap.add_argument("--n", type=int, default=2000, help="training images used")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args()
    device = br.resolve_device(args.device)
    name = "cifar10" if args.data_root else "cifar10-smoke"
    train = br.load_dataset(name, "train", args.data_root)
    if args.n > len(train):
        raise SystemExit(f"--n {args.n} exceeds the {len(train)} images of {name}")
    images, labels = train.images[: args.n], train.labels[: args.n]
    torch.manual_seed(0)
    base = baseline_images_per_second(images, labels, args, device)
    ours = ours_images_per_second(images, labels, args, device)
    result = provenance(benchmark="supervised ResNet-18 training, crop+flip", dataset=name, n=args.n,
                        width=args.width, batch_size=args.batch_size, epochs=args.epochs, workers=args.workers,
                        compile=args.compile, baseline_images_per_s=round(base, 1), ours_images_per_s=round(ours, 1),
                        speedup=round(ours / base, 2))
    print(f"torchvision DataLoader pipeline: {base:9.1f} images/s")
    print(f"backdoor_repro loop:             {ours:9.1f} images/s")
    print(f"speed-up: {ours / base:.2f}x  ({result['device']}, torch {torch.__version__})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
