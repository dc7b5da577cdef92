"""Image sizes: every attack says which sizes it is defined at; 224-px and 256-px triggers against the official
ImageNet formulas (T&R datasets/imagenet.py, FCT utils/dataloader_bd.py, DBD data/backdoor.py), written in numpy/PIL."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from backdoor_repro.attacks import check_attack_size, get_attack, keys_for_size
from backdoor_repro.attacks.assets import asset_path
from backdoor_repro.data import ImageSet

# the attacks with a fixed poisoned set (a training-controlled one poisons in its loop: test_inloop_wanet.py) and a
# trigger that exists before training (one optimised on the clean model: test_trojannn_stage.py)
POISONING_224 = [k for k in keys_for_size(224)
                 if not get_attack(k).training_controlled and not get_attack(k).trigger_from_clean_model]
TR_KEYS = ("grid_tr_imagenet", "blend_kitty_tr_imagenet", "trojan_wm_tr_imagenet", "sig_tr_imagenet")
PAPER_224 = TR_KEYS + ("white22_fct_imagenet", "blend_strip_fct_imagenet", "blend_kitty_dbd")


def fake_set(size: int, n: int = 120, classes: int = 4, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return ImageSet(images, labels, tuple(f"c{i}" for i in range(classes)), f"fake{size}")


def hwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


def applied(key: str, images: torch.Tensor, train: bool = True) -> np.ndarray:
    return hwc(get_attack(key).trigger.apply(images, train=train))


@pytest.fixture(scope="module")
def set224():
    return fake_set(224)


def test_the_papers_imagenet_attacks_are_registered_for_224():
    assert set(PAPER_224) <= set(keys_for_size(224))
    assert set(TR_KEYS) <= set(keys_for_size(256)) and "white22_fct_imagenet" not in keys_for_size(256)
    assert not set(PAPER_224[:-1]) & set(keys_for_size(32))


@pytest.mark.parametrize("key", POISONING_224)
def test_every_224_attack_poisons_a_224_batch(key, set224):
    attack = get_attack(key)
    p = attack.poison(set224, data_seed=0, adversary=lambda imgs, labels: imgs)
    assert p.images.shape == set224.images.shape and p.count > 0
    assert not torch.equal(p.images[p.poison_mask], set224.images[p.poison_mask])
    clean = ~p.poison_mask & ~p.cross_mask
    assert torch.equal(p.images[clean], set224.images[clean])
    triggered, attacked, true = attack.test_population(set224)
    assert triggered.shape[1:] == (3, 224, 224) and len(triggered) == len(attacked) == len(true) > 0


@pytest.mark.parametrize("key", TR_KEYS)
def test_tr_keys_poison_256_px_batches(key):
    assert get_attack(key).poison(fake_set(256, n=40), data_seed=0).count > 0


def test_unsupported_size_is_a_clear_error_before_any_compute(set224):
    def no_compute(*_):
        raise AssertionError("the adversary ran before the size check")

    with pytest.raises(ValueError, match=r"'lc_dbd' does not support 224 × 224 images: it is defined at 32 × 32"):
        get_attack("lc_dbd").poison(set224, data_seed=0, adversary=no_compute)
    with pytest.raises(ValueError, match=r"'grid3' does not support 224 × 224.*white22_fct_imagenet"):
        get_attack("grid3").test_population(set224)
    with pytest.raises(ValueError, match=r"'white22_fct_imagenet' does not support 32 × 32 images"):
        check_attack_size("white22_fct_imagenet", 32)
    with pytest.raises(ValueError, match=r"'grid_tr_imagenet' does not support 64 × 64 .* 224 × 224 and 256 × 256"):
        check_attack_size(get_attack("grid_tr_imagenet"), (8, 3, 64, 64))
    with pytest.raises(ValueError, match=r"'blend_kitty_dbd' does not support 224 × 200 images: .*square"):
        check_attack_size("blend_kitty_dbd", (224, 200))
    check_attack_size("blend_kitty_dbd", 224, alpha=0.2)
    check_attack_size("grid3", (32, 32))


def test_generic_triggers_keep_their_32_px_attributes():
    trigger = get_attack("blend_kitty_dbd").trigger
    assert trigger.pattern.shape == (3, 32, 32) and trigger.alpha == 0.1
    assert trigger.at(224).pattern.shape == (3, 224, 224) and trigger.at(224) is trigger.at(224)


# ---------------------------------------------------------------- T&R ImageNet-12: official at 256, centre crop at 224
def tr_grid_official(img):
    img = img.copy()
    for r, row in enumerate([[255, 0, 255], [0, 255, 0], [255, 0, 0]]):
        for c, value in enumerate(row):
            img[32 + 10 * r:42 + 10 * r, 32 + 10 * c:42 + 10 * c, :] = value
    return img


def tr_file(name):
    return Image.open(asset_path(f"trap_and_replace/{name}")).resize((256, 256))  # the code's default filter


def tr_blend_official(img):
    kitty = Image.open(asset_path("dbd/hello_kitty.png")).resize((256, 256))
    return np.asarray(Image.blend(Image.fromarray(img), kitty, 0.2))


def tr_trojan_wm_official(img):
    return np.clip(img + np.array(tr_file("trojan_wm.png")), 0, 255).astype(np.uint8)


def tr_sig_official(img):
    return (0.8 * img + 0.2 * np.expand_dims(np.array(tr_file("sig.png")), -1)).astype(np.uint8)


TR_OFFICIAL = {"grid_tr_imagenet": tr_grid_official, "blend_kitty_tr_imagenet": tr_blend_official,
               "trojan_wm_tr_imagenet": tr_trojan_wm_official, "sig_tr_imagenet": tr_sig_official}


@pytest.mark.parametrize("key", TR_KEYS)
def test_tr_imagenet_triggers_match_the_official_code(key):
    images = fake_set(256, n=6, seed=1).images
    want = np.stack([TR_OFFICIAL[key](img) for img in hwc(images)])
    assert np.array_equal(applied(key, images), want)
    crop = slice(16, 240)  # Resize(256) + CenterCrop(224) of the 256-px poisoned image
    assert np.array_equal(applied(key, images[:, :, crop, crop]), want[:, crop, crop])
    assert np.array_equal(applied(key, images, train=False), want)


def test_tr_imagenet_patterns_where_they_should_be():
    gray = torch.full((1, 3, 256, 256), 100, dtype=torch.uint8)
    out = get_attack("grid_tr_imagenet").trigger.apply(gray)[0]
    changed = torch.nonzero((out != 100).any(0))
    assert changed.min().item() == 32 and changed.max().item() == 61 and len(changed) == 900
    small = get_attack("grid_tr_imagenet").trigger.apply(gray[:, :, 16:240, 16:240])[0]
    assert torch.equal(small[:, 16:46, 16:46], out[:, 32:62, 32:62])
    images = hwc(fake_set(256, n=6, seed=1).images).astype(int)
    assert (images + np.array(tr_file("trojan_wm.png")) > 255).any()  # the uint8 wrap is exercised


# ---------------------------------------------------------------- FCT ImageNet subset (224 px)
def fct_square_official(img, trig=int(0.1 * 224)):
    img = img.copy()
    width, height = img.shape[0], img.shape[1]
    for j in range(width - 0 - trig, width - 0):
        for k in range(height - 0 - trig, height - 0):
            img[j, k] = 255.0
    return img


def fct_signal_official(img, delta=20, f=6, alpha=0.2):
    img = np.float32(img)
    pattern = np.zeros_like(img)
    m = pattern.shape[1]
    for j in range(img.shape[1]):
        pattern[:, j] = delta * np.sin(2 * np.pi * j * f / m)  # the same value on every row i
    img = (1 - alpha) * np.uint32(img) + alpha * pattern
    return np.uint8(np.clip(img, 0, 255))


def fct_sig_official(img, delta, f=6):
    img = np.float32(img)
    pattern = np.zeros_like(img)
    m = pattern.shape[1]
    for j in range(img.shape[1]):
        pattern[:, j] = delta * np.sin(2 * np.pi * j * f / m)
    return np.uint8(np.clip(np.uint32(img) + pattern, 0, 255))


@pytest.mark.parametrize("key, official", [("white22_fct_imagenet", fct_square_official),
                                           ("blend_strip_fct_imagenet", fct_signal_official)])
def test_fct_imagenet_triggers_match_the_official_code(key, official, set224):
    images = set224.images[:8]
    assert np.array_equal(applied(key, images), np.stack([official(img) for img in hwc(images)]))


def test_fct_square_and_signal_shapes():
    gray = torch.full((1, 3, 224, 224), 100, dtype=torch.uint8)
    out = get_attack("white22_fct_imagenet").trigger.apply(gray)[0]
    assert (out[:, 202:, 202:] == 255).all() and (out[:, :202] == 100).all() and (out[:, :, :202] == 100).all()
    strip = get_attack("blend_strip_fct_imagenet").trigger.apply(gray)[0].int()
    assert strip.min() >= 76 and strip.max() <= 84 and (strip[0] == strip[0, :1]).all()  # 80 +- 4, same on every row


def test_sig_fct_scales_with_the_image_width(set224):
    images = set224.images[:8]
    for train, delta in ((True, 40), (False, 60)):
        want = np.stack([fct_sig_official(img, delta) for img in hwc(images)])
        assert np.array_equal(applied("sig_fct", images, train), want)


# ---------------------------------------------------------------- generic rules at 224
def test_dbd_blend_resizes_the_kitty_to_the_image(set224):
    images = set224.images[:8]
    kitty = Image.open(asset_path("dbd/hello_kitty.png")).convert("RGB")
    want = [np.asarray(Image.blend(Image.fromarray(img), kitty.resize((224, 224)), 0.1)) for img in hwc(images)]
    assert np.array_equal(applied("blend_kitty_dbd", images), np.stack(want))


def test_backdoorbench_kitty_is_resized_like_torchvision(set224):
    jpeg = Image.open(asset_path("backdoorbench/hello_kitty.jpeg")).convert("RGB")
    want = np.asarray(transforms.Resize((224, 224))(jpeg))
    assert np.array_equal(get_attack("blend_kitty_bb").trigger.at(224).pattern.permute(1, 2, 0).numpy(), want)


def test_noise_and_warp_are_drawn_at_the_image_size(set224):
    images = set224.images[:4]
    assert torch.equal(get_attack("wanet", s=0.0).trigger.apply(images), images)
    warped = get_attack("wanet").trigger.apply(images)
    assert not torch.equal(warped, images) and torch.equal(warped, get_attack("wanet").trigger.apply(images))
    assert get_attack("blend_noise").trigger.at(224).pattern.shape == (3, 224, 224)
    assert get_attack("wanet").cross_trigger.at(224).grid.shape == (224, 224, 2)


@pytest.mark.parametrize("key", POISONING_224)
def test_a_224px_image_folder_fixture_runs_every_attack_defined_at_224(key, tmp_path, monkeypatch):
    """From disk to poisoned set: an ImageNet-style WNID tree (varied, non-square JPEGs) loaded as imagenet12 at
    224 px, poisoned and turned into its ASR population by every attack the papers define at that size."""
    from backdoor_repro.data import load_dataset
    from test_data_fixtures import write_imagenet_tree

    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))
    write_imagenet_tree(tmp_path / "data", per_class=3)
    train = load_dataset("imagenet12", "train", tmp_path / "data")
    test = load_dataset("imagenet12", "test", tmp_path / "data")
    clean_label = get_attack(key).label_mode == "clean_label"
    attack = get_attack(key, rate=1.0 if clean_label else 0.25)  # clean-label: a fraction of the 3 target images
    poisoned = attack.poison(train, data_seed=0)
    assert poisoned.images.shape == train.images.shape == (36, 3, 224, 224)
    changed = (poisoned.images != train.images).flatten(1).any(1)
    mask = poisoned.poison_mask
    assert mask.any() and changed[mask].all()  # the trigger lands on every poisoned image...
    if not key.startswith("wanet"):  # ...and on no other (WaNet's noise mode also warps some clean-label images)
        assert not changed[~mask].any()
    triggered, _, _ = attack.test_population(test)
    assert triggered.shape[1:] == (3, 224, 224) and triggered.shape[0] > 0
