"""Trigger files shipped with the package, checked against the sha256 of the official copies."""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from ..paths import TRIGGERS_DIR

SHA256 = {
    "dbd/cifar_1.png": "5609678121bb40f46c1986d86b888099c8129f980fbf11cf868494930764af6a",
    "dbd/hello_kitty.png": "e313fb548a8b873d999d50426ebe2752f5512cb9318def33077158589c3b344d",
    "fct/best_square_trigger_cifar10.npz": "e0618d3abdf2db4bc2a2d828defc9b7223dc2aefb50376a6d839ef71c0b65ed9",
    "fct/signal_cifar10_mask.npy": "ee1c75ecf0b277f08181139e54c5835b3f0a1298df3282b718a5e3fb588fb97a",
    "backdoorbench/badnet_white_square.png": "6f97bd2f498c3bfec84f6183861c85cc9585626d0b77ade6224b9ad5815f6991",
    "backdoorbench/badnet_grid.png": "eae6cf9f468f4d8c3fee9b47b292f0fac50a1c9de22004a4f96d88162aaacc88",
    "backdoorbench/hello_kitty.jpeg": "10f470812922a1b22d34755f491b23f2cabc6e32f236a26e48d2dddd396ae2b3",
    "backdoorbench/lf_cifar10_preactresnet18.npy": "743f28f41ff088544b8f26663f6fb2663c033184166b917c8934f7df73e47142",
    "backdoorbench/lf_cifar100_preactresnet18.npy": "40dfe0435ebb7d070674eb11b225c882fbce32887f6d8c50156e8a5e6103e628",
    "backdoorbench/lf_gtsrb_preactresnet18.npy": "e45e28d23f16eecb5fd1067b9ab3dd386ec029d1b84af875a4f222cf11ffc317",
    "backdoorbench/trojannn_apple4.png": "b7c79658481e9e0a0dc479e0d70066fca2e8573a93f421998c5e1bcb5fe78984",
    "trap_and_replace/trojan_3x3.png": "9c4001742dfaa9e0033767fbc434b58da422cf1961a934e7a5cb2d1323aa011f",
    "trap_and_replace/sig.png": "5d361fa383646200cd8c7851249f4a971c19fbf09c6137d7ca5b54078c2b1ce5",
    "trap_and_replace/trojan_8x8.png": "b47420e27b0a78a828787526930d77651a8ce7124f59b89ac495de787eb25b66",
    "trap_and_replace/trojan_wm.png": "1ed725dab526c7218333640cc6dc18cb85aa1c1c2d6497082b3234a24c77e3fa",
    "trap_and_replace/l0_inv.png": "c979bfd3deab944b59f1e3d9172fb56b19bff081d3f596ed61e6fab70e62fc51",
    "trap_and_replace/mask.npy": "d8eeee5213e4d1648d358688ac20b0485a55981d85f261c537421bd397200bf3",
    "trap_and_replace/l2_inv.png": "138a28d3883d4e3095a304ac441c2b9011bb19dbb43d0d5d3b535f13f7669e69",
    "trap_and_replace/smooth_cifar10.png": "ef17d02fc868e8f515f61ef81492bc9d1f3b5696d35c120648f8a6c2baeee955",
    "trap_and_replace/smooth_gtsrb.png": "c85ed38c9b5feb9f61808659d8fa189d46e623b30deb3d93d0cf9ff158b2f2c7",
}


class AssetMismatch(ValueError):
    """A trigger file differs from the official copy."""


def asset_path(name: str):
    path = TRIGGERS_DIR / name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if name in SHA256 and digest != SHA256[name]:
        raise AssetMismatch(f"{path} has sha256 {digest}, expected {SHA256[name]} (the official file)")
    return path


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


@lru_cache(maxsize=None)
def image_asset(name: str, size: int | None = None, resample: int = Image.BICUBIC) -> torch.Tensor:
    """An RGB image file as uint8 ``(3, H, W)``, optionally resized with PIL's ``resample`` filter."""
    with Image.open(asset_path(name)) as im:
        im = im.convert("RGB")
        if size is not None:
            im = im.resize((size, size), resample)
        return _chw(np.asarray(im, dtype=np.uint8))


@lru_cache(maxsize=None)
def array_asset(name: str) -> torch.Tensor:
    """A ``.npy`` trigger file as a tensor of its own dtype."""
    return torch.from_numpy(np.load(asset_path(name)))


@lru_cache(maxsize=None)
def fct_trojan_pattern() -> torch.Tensor:
    """FCT's Trojan trigger, float32 ``(3, 32, 32)``, values up to 250.35."""
    with np.load(asset_path("fct/best_square_trigger_cifar10.npz")) as z:
        return torch.from_numpy(z["x"].astype(np.float32))


def wrapped_stripes(width: int = 32, height: int = 32) -> torch.Tensor:
    """The stripe pattern ``s`` of T&R ``sig.png`` / FCT ``signal_cifar10_mask.npy``:
    trunc(20 sin(0.8 c)) mod 256, same for every row and channel (``attacks.md`` §3.4)."""
    c = np.arange(width)
    row = np.remainder(np.trunc(20 * np.sin(0.8 * c)), 256).astype(np.uint8)
    return torch.from_numpy(np.broadcast_to(row, (3, height, width)).copy())
