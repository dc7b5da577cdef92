"""Label-consistent poisoning from a file of pre-computed adversarial images (attacks/lc_files.py): synthetic files
in the official format (np.save of (N, H, W, 3), one row per training image in torchvision's order: MadryLab's
inf_16.npy for T&R cl, craft_adv_dataset.py's <dataset>_train.npy for BackdoorBench lc). The poisoned images must
be the file's rows plus the trigger as the official code writes it, bad files are refused before any compute,
and the file's content keys the poisoned set apart from our PGD."""
import pickle
import shutil

import numpy as np
import pytest
import torch

from backdoor_repro import pipeline
from backdoor_repro.attacks import get_attack
from backdoor_repro.attacks.lc_files import FileImagesAttack, adversarial_images
from backdoor_repro.cache import ArtifactCache, _jsonable
from backdoor_repro.data import ImageSet
from backdoor_repro.spec import RunSpec

pytestmark = pytest.mark.timeout(120)

CLASSES = tuple(f"c{i}" for i in range(10))


def cifar_like(n=100, seed=0, order="torchvision"):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % 10, CLASSES, "cifar10", order)


def save_file(path, data, eps=16, dtype=np.uint8, seed=1):
    """Every training image perturbed by at most ``eps`` pixel steps, channel-last, in the data's order."""
    clean = data.images.permute(0, 2, 3, 1).numpy().astype(np.float64)
    noise = np.random.default_rng(seed).uniform(-eps, eps, clean.shape)
    adv = np.clip(clean + noise, 0, 255)
    np.save(path, adv.astype(dtype))  # a float file keeps fractions (T&R truncates them)
    return path


def hwc(images):
    return images.permute(0, 2, 3, 1).numpy()


def tr_cl_official(clean, labels, hard, holdout, target=0, ratio=0.1):
    """T&R datasets/cifar.py ('cl', train split) in numpy: the first N target images of the split take the file's
    rows (astype uint8), the 3x3 grid is written at the four corners, then clip and the uint8 cast."""
    n_full = len(clean)
    images, labels = clean[:n_full - holdout].astype(np.float64), labels[:n_full - holdout]
    hard = hard[:n_full - holdout]
    n = min(int(ratio * n_full), int((labels == target).sum()))
    picked = np.flatnonzero(labels == target)[:n]
    images[picked] = hard[picked].astype(np.uint8)
    grid = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 255]], dtype=np.float64)
    for r in (0, 29):
        for c in (0, 29):
            images[picked, r:r + 3, c:c + 3, :] = grid[None, :, :, None]
    return np.clip(images, 0, 255).astype(np.uint8), picked


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_cl_tr_poisons_with_the_file_rows_and_the_tr_corners(tmp_path, dtype):
    full = cifar_like()
    path = save_file(tmp_path / "inf_16.npy", full, dtype=dtype)
    attack = get_attack("cl_tr", adv_images=adversarial_images(path))
    assert isinstance(attack, FileImagesAttack) and not attack.needs_adversary
    split = full.head(90)  # T&R's holdout: the last 10 of 100 split off; the file still has all 100 rows
    poisoned = attack.poison(split, 0, reference_size=len(full))
    official, picked = tr_cl_official(hwc(full.images), full.labels.numpy(), np.load(path), holdout=10)
    assert np.array_equal(hwc(poisoned.images), official)
    assert np.array_equal(np.flatnonzero(poisoned.poison_mask.numpy()), picked)
    assert torch.equal(poisoned.labels, split.labels)


def test_lc_bb_poisons_with_the_file_rows_and_the_bottom_right_patch(tmp_path):
    data = cifar_like()
    path = save_file(tmp_path / "cifar10_train.npy", data, eps=8)
    poisoned = get_attack("lc_bb", adv_images=adversarial_images(path)).poison(data, 3)
    mask = poisoned.poison_mask.numpy()
    assert mask.sum() == 10 and (data.labels.numpy()[mask] == 0).all()
    signs = {(-1, -1): 1, (-1, -2): -1, (-1, -3): 1, (-2, -1): -1, (-2, -2): 1, (-2, -3): -1,
             (-3, -1): 1, (-3, -2): -1, (-3, -3): -1}  # FMT utils/bd_img_transform/lc.py "bottom-right", amplitude 1
    official = np.load(path)[mask].astype(np.float32)  # lc.py: the file's row replaces the image, then the patch
    for (r, c), v in signs.items():
        official[:, r, c] += 255 * v
    assert np.array_equal(hwc(poisoned.images)[mask], np.clip(official, 0, 255).astype(np.uint8))
    assert torch.equal(poisoned.images[~poisoned.poison_mask], data.images[~poisoned.poison_mask])


@pytest.mark.parametrize("array, message", [
    (np.zeros((100, 3, 32, 32), np.uint8), "shape"),  # channel-first: not the official layout
    (np.zeros((100, 32, 32), np.uint8), "shape"),
    (np.zeros((100, 32, 32, 3), np.int64), "dtype"),
])
def test_bad_format_is_refused_when_the_file_is_checked(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=message):
        adversarial_images(tmp_path / "bad.npy")
    np.savez(tmp_path / "bad.npz", a=array)
    with pytest.raises(ValueError, match="npz"):
        adversarial_images(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="does not exist"):
        adversarial_images(tmp_path / "missing.npy")


def test_a_bare_path_is_refused_so_the_key_always_holds_the_hash(tmp_path):
    path = save_file(tmp_path / "inf_16.npy", cifar_like())
    with pytest.raises(ValueError, match="adversarial_images"):
        get_attack("cl_tr", adv_images=str(path))


def test_mismatched_data_is_refused_before_any_compute(tmp_path, monkeypatch):
    full = cifar_like()
    monkeypatch.setattr(pipeline, "no_defense_model", lambda *a, **k: pytest.fail("a model was trained"))
    short = adversarial_images(save_file(tmp_path / "short.npy", full.head(80)))
    spec = RunSpec("cifar10", None, "wrn16", 8, 10, "cl_tr", {"adv_images": short}).bound_to(full)
    with pytest.raises(ValueError, match="80 rows; the training set has 100"):
        pipeline.poisoned_training_set(spec, full, ArtifactCache(tmp_path / "cache"), progress=False)
    attack = get_attack("cl_tr", adv_images=adversarial_images(save_file(tmp_path / "inf.npy", full)))
    with pytest.raises(ValueError, match="torchvision's order"):  # an image-folder copy: other indices
        attack.poison(cifar_like(order="folder"), 0)
    other = get_attack("cl_tr", adv_images=adversarial_images(save_file(tmp_path / "o.npy", cifar_like(seed=5))))
    with pytest.raises(ValueError, match="other data or another order"):
        other.poison(full, 0)
    small = get_attack("cl_tr", adv_images=adversarial_images(save_file(tmp_path / "s.npy", full.head(100))))
    with pytest.raises(ValueError, match="training images are"):
        small.poison(ImageSet(full.images[:, :, :16, :16].contiguous(), full.labels, CLASSES, "cifar10",
                              "torchvision"), 0)


def test_a_file_changed_after_its_check_is_refused(tmp_path):
    full = cifar_like()
    path = save_file(tmp_path / "inf_16.npy", full)
    attack = get_attack("cl_tr", adv_images=adversarial_images(path))
    save_file(path, full, seed=2)
    with pytest.raises(ValueError, match="changed since it was checked"):
        attack.poison(full, 0)


def test_the_file_content_keys_the_poisoned_set(tmp_path):
    full = cifar_like()
    path = save_file(tmp_path / "inf_16.npy", full)

    def spec(**overrides):
        return RunSpec("cifar10", None, "wrn16", 8, 10, "cl_tr", overrides).bound_to(full)

    pgd, from_file = spec(), spec(adv_images=adversarial_images(path))
    assert pgd.data_stage().key != from_file.data_stage().key
    assert "lc_images" in [p.name for p in pgd.data_stage().parents] and not from_file.data_stage().parents
    assert from_file.no_defense_stage().key != pgd.no_defense_stage().key
    shutil.copy(path, tmp_path / "moved.npy")  # the same content elsewhere: the same key
    assert spec(adv_images=adversarial_images(tmp_path / "moved.npy")).data_stage().key == from_file.data_stage().key
    save_file(path, full, seed=2)  # other content at the same path: another key
    assert spec(adv_images=adversarial_images(path)).data_stage().key != from_file.data_stage().key
    recorded = str(_jsonable(from_file.data_stage().describe()))
    assert from_file.attack_overrides["adv_images"].sha256 in recorded  # the stage description names the file
    restored = pickle.loads(pickle.dumps(from_file))  # a worker process still finds the file
    assert restored.attack_overrides["adv_images"].path == (tmp_path / "inf_16.npy").resolve()
