"""Run profiles as typed, validated configs: ``smoke`` (CPU, bundled data), ``fast`` (one GPU,
shortened schedules) and ``paper`` (the official hyperparameters). Every way a profile differs from
the papers' code is listed in its ``deviations``; notebooks print them."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from .train import TrainConfig

PAPER_SUPERVISED = TrainConfig(epochs=200, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
                               schedule="multistep", milestones=(100, 150), gamma=0.1, augmentation="crop_flip")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    dataset: str
    train_per_class: int | None  # class-balanced subset of the training set; None = all of it
    test_per_class: int | None
    model: str
    width: int
    requires_gpu: bool
    supervised: TrainConfig  # the No-Defense (backdoored) model
    attack_overrides: dict = field(default_factory=dict)  # applied to every attack ("rate": dirty-label ones only)
    table_attacks: tuple[str, ...] = ()
    gallery_attacks: tuple[str, ...] = ()
    deviations: tuple[str, ...] = ()  # data, precision, poisoning: every notebook
    model_deviations: tuple[str, ...] = ()  # the ResNet-18 No-Defense model and table (a defense may set its own)
    run_name: str = ""  # where outputs go when it differs from ``name`` (a fast/paper run on another dataset)
    bf16: bool = True  # bf16 autocast on the GPU; the paper profile trains in fp32, as the official code

    def with_(self, **changes) -> "Profile":
        return validated(replace(self, **changes))

    @property
    def outputs(self) -> str:
        """The folder name under figures/ and tables/: the profile's, or ``<profile>-<dataset>`` off CIFAR-10."""
        return self.run_name or self.name


_GALLERY = ("badnets_dbd_2x2", "grid3", "white3_fct", "white3_bb", "blend_kitty_dbd", "blend_kitty_bb",
            "blend_strip_fct", "blend_noise", "trojan3_fct", "sig_fct", "sig_tr_wrapped", "wanet", "lc_dbd")

_FULL_TABLE = ("badnets_dbd_2x2", "blend_kitty_dbd", "grid3", "white3_fct", "trojan3_fct", "blend_strip_fct",
               "blend_kitty_fct", "sig_fct", "wanet", "lc_dbd")

PROFILES = {
    "smoke": Profile(
        name="smoke",
        description="CPU, 2 cores: bundled real CIFAR-10 subset (5,000 train / 1,000 test, JPEG re-encoded), "
                    "narrow networks (ResNet-18, WRN-16 at width 8), short schedules; proves every code path and the "
                    "qualitative effect",
        dataset="cifar10-smoke", train_per_class=None, test_per_class=None, model="resnet18", width=8,
        requires_gpu=False,
        supervised=TrainConfig(epochs=20, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine",
                               augmentation="none", checkpoint_every=5),
        attack_overrides={"rate": 0.1},
        table_attacks=("badnets_dbd_2x2", "blend_kitty_fct", "grid3"),
        gallery_attacks=_GALLERY,
        deviations=(
            "data: 5,000 training / 1,000 test images of CIFAR-10 (JPEG re-encoded), not 50,000 / 10,000",
            "dirty-label poisoning rate 10% for every attack, so the backdoor is learned on 5,000 images (DBD's "
            "attacks: 5% in the paper; T&R's, FCT's and BackdoorBench's attacks already poison 10%)",
            "poisoned indices: a fixed rule is applied to the bundled subset's order (T&R's first N non-target, or "
            "target, images); a random one draws from our own stream (numpy default_rng(data_seed)): the subset is not "
            "in torchvision's order, so the official random streams cannot apply",
        ),
        model_deviations=(
            "model: ResNet-18 with base width 8 (features 64-d) instead of 64 (512-d)",
            "No-Defense training: 20 epochs, SGD lr 0.05, batch 64, cosine, no augmentation "
            "(paper: 200 epochs, lr 0.1, batch 128, steps at 100/150, random crop + flip). Measured on this "
            "data: with flip (which moves a corner patch) the 2x2 BadNets patch reached only ASR 24-50% "
            "against a clean->target rate of 16-17%; without augmentation ASR 97% at CTR 10%",
            "No-Defense table limited to three attacks for the CPU budget (the gallery shows all); measured earlier "
            "on this data: sig_bb ASR 99.7% (clean->target 0.0%), trojan3_fct 78.4% (8.4%), and WaNet not learned "
            "(24.4% vs 20.4%); those run in fast/paper",
        )),
    "fast": Profile(
        name="fast",
        description="one GPU: full CIFAR-10, ResNet-18, shortened schedules",
        dataset="cifar10", train_per_class=None, test_per_class=None, model="resnet18", width=64,
        requires_gpu=True,
        supervised=PAPER_SUPERVISED.with_(epochs=40, schedule="cosine"),
        attack_overrides={"indices": "official"},
        table_attacks=_FULL_TABLE,
        gallery_attacks=_GALLERY,
        deviations=(
            "bf16 autocast and channels_last on the GPU (the official code trains in fp32)",
            "poisoned indices: each official code's own selection (its seeded random stream, or T&R's first N "
            "non-target indices; attacks/selection.py) on torchvision's CIFAR-10 files; on an image-folder copy (e.g. "
            "the JPEG archive, class by class) our own seeded stream picks them, with a warning",
        ),
        model_deviations=(
            "No-Defense training: 40 epochs with a cosine schedule instead of 200 epochs with steps at 100/150",
            "DBD's Blended baseline config trains with RandomResizedCrop; this profile uses crop + flip for every attack",
        )),
    "paper": Profile(
        name="paper",
        description="the official hyperparameters on full CIFAR-10",
        dataset="cifar10", train_per_class=None, test_per_class=None, model="resnet18", width=64,
        requires_gpu=True, supervised=PAPER_SUPERVISED, bf16=False,
        attack_overrides={"indices": "official"},
        table_attacks=_FULL_TABLE,
        gallery_attacks=_GALLERY,
        deviations=(
            "channels_last on the GPU; fp32 as the official code (torch lets cuDNN run convolutions in TF32 on "
            "Ampere and later GPUs, as it did for the official code on such GPUs)",
            "poisoned indices: each official code's own selection (its seeded random stream, or T&R's first N "
            "non-target indices; attacks/selection.py) on torchvision's CIFAR-10 files; on an image-folder copy (e.g. "
            "the JPEG archive, class by class) our own seeded stream picks them, with a warning",
        ),
        model_deviations=(
            "DBD's Blended baseline config trains with RandomResizedCrop; this profile uses crop + flip for every attack",
        )),
}


def validated(profile: Profile) -> Profile:
    from .attacks import ATTACKS
    from .data import DATASETS

    if profile.dataset not in DATASETS:
        raise ValueError(f"profile {profile.name}: unknown dataset {profile.dataset!r}")
    unknown = [a for a in profile.table_attacks + profile.gallery_attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"profile {profile.name}: unknown attacks {unknown}")
    rate = profile.attack_overrides.get("rate")
    if rate is not None and not (0 < rate <= 1):
        raise ValueError(f"profile {profile.name}: rate must be in (0, 1], got {rate}")
    return profile


def get_profile(name: str, **overrides) -> Profile:
    """The named profile with ``overrides`` applied; unknown names and parameters are errors."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    names = {f.name for f in fields(Profile)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown profile parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return validated(replace(PROFILES[name], **overrides))


def profile_for(name: str, dataset: str | None = None) -> Profile:
    """The named profile, on ``dataset`` if given (``fast`` / ``paper`` only: ``smoke`` runs on the bundled subset)."""
    profile = get_profile(name)
    if dataset is None or dataset == profile.dataset:
        return profile
    if not profile.requires_gpu:
        raise ValueError(f"profile {name!r} runs on the bundled CIFAR-10 subset only; --dataset {dataset} needs "
                         "--profile fast or paper")
    return get_profile(name, dataset=dataset, run_name=f"{name}-{dataset}")


def check_data_arguments(profile: Profile, data_root, download: bool) -> None:
    """The smoke profile runs on the bundled subset: a data root or a download request would be ignored, so they
    are errors rather than silently unused."""
    if profile.dataset == "cifar10-smoke" and (data_root is not None or download):
        given = "--data-root / data_root" if data_root is not None else "--download / download"
        raise ValueError(f"{given} is not used by the smoke profile, which runs on the bundled CIFAR-10 subset: drop "
                         "it, or choose --profile fast / paper to run on that data")


# The dry run of a GPU profile (``run_all.sh --profile fast --dry-run``): every notebook with that profile's configs,
# models and code paths, each stage cut to a couple of steps, on a class-balanced slice of the bundled CIFAR-10
# subset, on the CPU (or a GPU). It checks that every line of the profile runs and every output is written; its numbers mean
# nothing, and its outputs go to a temporary folder (run_all.sh), never into tables/<profile>.
DRY_RUN_TRAIN_PER_CLASS = 10
DRY_RUN_TEST_PER_CLASS = 10
DRY_RUN_MAX_BATCH = 32
# On the CPU the dry run narrows every network to this base width (the smoke width; ResNet-18 at 8: 64-d features,
# 600 feature maps): at the full width 64, FMP's ranking of 4,800 maps and its single-map ablations alone take the
# better part of an hour on 2 cores, and at 16 both dry runs took 12 of CI's 45 minutes. On CUDA the dry run keeps
# the profile's widths.
DRY_RUN_CPU_WIDTH = 8


def dry_run_schedule(cfg: TrainConfig) -> TrainConfig:
    """A training schedule cut to one epoch of at most ``DRY_RUN_MAX_BATCH`` images a step (its optimizer, schedule
    kind, augmentation and precision switches kept). One epoch writes no checkpoint: resuming is tested on its own
    (tests/test_resume.py)."""
    return cfg.with_(epochs=1, batch_size=min(cfg.batch_size, DRY_RUN_MAX_BATCH), checkpoint_every=1,
                     warmup_epochs=min(cfg.warmup_epochs, 1))


def dry_run_profile(profile: Profile) -> Profile:
    """The profile a dry run reports under: its outputs go to ``<profile>-dry-run`` (``tables/fast-dry-run``), so a
    dry run started outside ``run_all.sh`` never writes into a real run's folders."""
    return profile.with_(run_name=f"{profile.outputs}-dry-run")


def check_dry_run(profile: Profile, data_root, download: bool) -> None:
    """A dry run exercises a GPU profile on the bundled data: the smoke profile (already the short run), another
    dataset, a data root or a download are errors, before any compute."""
    if not profile.requires_gpu:
        raise ValueError(f"--dry-run is for the GPU profiles (fast, paper); {profile.name!r} is itself the short run")
    if profile.dataset != "cifar10":
        raise ValueError(f"--dry-run covers CIFAR-10 only (it runs on the bundled CIFAR-10 subset), not {profile.dataset}")
    if data_root is not None or download:
        raise ValueError("--dry-run runs on the bundled CIFAR-10 subset: drop --data-root / --download")


def check_device(profile: Profile, device: torch.device) -> None:
    """A GPU profile on a machine without a GPU is an error before any compute."""
    if profile.requires_gpu and device.type != "cuda":
        raise RuntimeError(f"profile {profile.name!r} needs a CUDA GPU (it trains on full datasets); "
                           f"this run's device is {device}. Use --profile smoke on a CPU machine.")
