"""Build the bundled smoke dataset from an image-folder copy of CIFAR-10.

Takes the first N files (sorted by name) of every class folder of ``train/`` and ``test/`` and
stores their JPEG bytes unchanged (no re-encoding) in one ``.npz`` next to the labels and file
names, so the smoke profile runs on real images without any download.

    python scripts/make_smoke_bundle.py /path/to/cifar10-jpeg lib/backdoor_repro/assets/cifar10_smoke.npz
"""
import argparse
import hashlib
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def collect(split_dir: Path, per_class: int):
    blobs, labels, names = [], [], []
    for label, cls in enumerate(CLASSES):
        files = sorted((split_dir / cls).iterdir())[:per_class]
        if len(files) < per_class:
            raise SystemExit(f"{split_dir / cls} has {len(files)} files, need {per_class}")
        for f in files:
            blobs.append(f.read_bytes())
            labels.append(label)
            names.append(f"{cls}/{f.name}")
    return blobs, labels, names


def pack(blobs):
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="image-folder tree with train/<class>/ and test/<class>/")
    ap.add_argument("out", type=Path)
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=100)
    args = ap.parse_args()
    arrays = {}
    for split, n in (("train", args.train_per_class), ("test", args.test_per_class)):
        blobs, labels, names = collect(args.root / split, n)
        arrays[f"{split}_jpeg"], arrays[f"{split}_offsets"] = pack(blobs)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
        arrays[f"{split}_names"] = np.asarray(names)
    arrays["classes"] = np.asarray(CLASSES)
    np.savez(args.out, **arrays)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, sha256 {digest})")


if __name__ == "__main__":
    main()
