"""Run profiles as typed, validated configs: ``smoke`` (CPU, bundled data), ``fast`` (one GPU,
shortened schedules) and ``paper`` (the official hyperparameters). Every way a profile differs from
the papers' code is listed in its ``deviations``; notebooks print them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace

import torch

from .train import TrainConfig

CPU_WIDTH = 8  # the cpu profile's base width for every network (see ARCHITECTURE.md, the cpu profile)
CPU_NO_DEFENSE_EPOCHS = 30
# Measured on the cpu profile (2026-12-07, full CIFAR-10, width 8): after 30 epochs blend_kitty_dbd (alpha 0.1, 5 %)
# had ASR 89.0, under the No-Defense bar of 90; its No-Defense model trains longer, no other attack's changes.
CPU_LONGER_NO_DEFENSE = {"blend_kitty_dbd": 40}
PAPER_NO_DEFENSE = TrainConfig(epochs=200, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
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
    no_defense_schedule: TrainConfig  # the No-Defense (backdoored) model
    attack_overrides: dict = field(default_factory=dict)  # applied to every attack ("rate": dirty-label ones only)
    deviations: tuple[str, ...] = ()  # data, precision, poisoning: every notebook
    model_deviations: tuple[str, ...] = ()  # the ResNet-18 No-Defense model and table (a defense may set its own)
    run_name: str = ""  # where outputs go when it differs from ``name`` (a fast/paper run on another dataset)
    bf16: bool = True  # bf16 autocast on the GPU; the paper profile trains in fp32, as the official code
    no_defense_epochs_for: dict = field(default_factory=dict)  # attack -> epochs where it differs from the schedule's

    def no_defense_schedule_for(self, attack: str | None) -> TrainConfig:
        """The profile's No-Defense schedule for ``attack`` (an entry of ``no_defense_epochs_for`` sets its epochs)."""
        epochs = self.no_defense_epochs_for.get(attack)
        return self.no_defense_schedule if epochs is None else self.no_defense_schedule.with_(epochs=epochs)

    def with_(self, **changes) -> "Profile":
        return validated(replace(self, **changes))

    @property
    def outputs(self) -> str:
        """The folder name under figures/ and tables/: the profile's, or ``<profile>-<dataset>`` off CIFAR-10."""
        return self.run_name or self.name


PROFILES = {
    "smoke": Profile(
        name="smoke",
        description="CPU, 2 cores: bundled real CIFAR-10 subset (5,000 train / 1,000 test, JPEG re-encoded), "
                    "narrow networks (ResNet-18, WRN-16 at width 8), short schedules; proves every code path and the "
                    "qualitative effect",
        dataset="cifar10-smoke", train_per_class=None, test_per_class=None, model="resnet18", width=8,
        requires_gpu=False,
        no_defense_schedule=TrainConfig(epochs=20, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine",
                               augmentation="none", checkpoint_every=5),
        attack_overrides={"rate": 0.1},
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
            "(paper: 200 epochs, lr 0.1, batch 128, steps at 100/150, random crop + flip): with a flip, which moves a "
            "corner patch, the 2x2 BadNets patch is not learned on this data (ARCHITECTURE.md, smoke choices)",
            "No-Defense table limited to three attacks for the CPU budget (the gallery shows all); the others run in "
            "fast/paper",
        )),
    "cpu": Profile(
        name="cpu",
        description="CPU, 2 cores: full CIFAR-10 (50,000 / 10,000), each paper's network family narrowed to base "
                    "width 8, schedules shortened towards 8 hours for the six notebooks (measured: ARCHITECTURE.md); "
                    "the scale where the papers' claims can hold or fail",
        dataset="cifar10", train_per_class=None, test_per_class=None, model="resnet18", width=CPU_WIDTH,
        requires_gpu=False,
        no_defense_schedule=PAPER_NO_DEFENSE.with_(epochs=CPU_NO_DEFENSE_EPOCHS, schedule="cosine"),
        attack_overrides={"indices": "official"}, no_defense_epochs_for=CPU_LONGER_NO_DEFENSE,
        deviations=(
            "poisoned indices: each official code's own selection on torchvision's CIFAR-10 files; on an image-folder "
            "copy (e.g. the JPEG archive, class by class) our own seeded stream picks the same number, with a warning",
            "every network at base width 8 (ResNet-18: 64-d features instead of 512; WRN-16 at 8 instead of 16): the "
            "width that trains full CIFAR-10 on 2 CPU cores within the profile's budget",
            "one seed per run",
        ),
        model_deviations=(
            f"No-Defense training: {CPU_NO_DEFENSE_EPOCHS} epochs with a cosine schedule per step instead of 200 epochs "
            "with steps at 100/150 (lr 0.1, batch 128, crop + flip as the paper); "
            + ", ".join(f"{a} {e} epochs" for a, e in CPU_LONGER_NO_DEFENSE.items())
            + " (after 30 its ASR was 89.0, under the No-Defense bar of 90)",
            "DBD's Blended baseline config trains with RandomResizedCrop; this profile uses crop + flip for every attack",
        )),
    "fast": Profile(
        name="fast",
        description="one GPU: full CIFAR-10, ResNet-18, shortened schedules",
        dataset="cifar10", train_per_class=None, test_per_class=None, model="resnet18", width=64,
        requires_gpu=True,
        no_defense_schedule=PAPER_NO_DEFENSE.with_(epochs=40, schedule="cosine"),
        attack_overrides={"indices": "official"},
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
        requires_gpu=True, no_defense_schedule=PAPER_NO_DEFENSE, bf16=False,
        attack_overrides={"indices": "official"},
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
    from .data import DATASETS

    if profile.dataset not in DATASETS:
        raise ValueError(f"profile {profile.name}: unknown dataset {profile.dataset!r}")
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
    """The named profile, on ``dataset`` if given (``fast`` / ``paper`` only: ``smoke`` runs on the bundled subset,
    ``cpu`` on CIFAR-10)."""
    profile = get_profile(name)
    if dataset is None or dataset == profile.dataset:
        return profile
    if not profile.requires_gpu:
        raise ValueError(f"profile {name!r} runs on {profile.dataset} only; --dataset {dataset} needs --profile fast "
                         "or paper")
    return get_profile(name, dataset=dataset, run_name=f"{name}-{dataset}")


def check_data_arguments(profile: Profile, data_root, download: bool) -> None:
    """The smoke profile runs on the bundled subset: a data root or a download request would be ignored, so they
    are errors rather than silently unused."""
    if profile.dataset == "cifar10-smoke" and (data_root is not None or download):
        given = "--data-root / data_root" if data_root is not None else "--download / download"
        raise ValueError(f"{given} is not used by the smoke profile, which runs on the bundled CIFAR-10 subset: drop "
                         "it, or choose --profile fast / paper to run on that data")


# Small runs: every stage cut to a couple of steps, to check code paths, never numbers. One table, applied by
# resolve.resolve (the spec: schedule, width) and Experiment.config (each defense's ``small_run`` overrides):
# * ``dry_run`` (``run_all.sh --profile fast --dry-run``): every notebook with a GPU profile's configs, models and code
#   paths on a class-balanced slice of the bundled CIFAR-10 subset, on the CPU (or a GPU); its outputs go to a
#   temporary folder, never into tables/<profile>. On the CPU the networks are narrowed to the smoke width: at the
#   full width 64, FMP's ranking of 4,800 maps and its single-map ablations alone take the better part of an hour on
#   2 cores, and at 16 both dry runs took 12 of CI's 45 minutes. On CUDA the dry run keeps the profile's widths.
# * ``plumbing`` (the grid's ``--plumbing``): a slice of the profile's own data, width-4 networks, one short epoch.
@dataclass(frozen=True)
class SmallRun:
    name: str
    train_per_class: int
    test_per_class: int
    bundled_data: bool  # the bundled CIFAR-10 subset instead of the profile's dataset
    width: int  # the networks' base width is at most this...
    width_on_cpu_only: bool  # ...on the CPU only (the dry run keeps the GPU's widths)
    max_batch: int  # every schedule's batch is at most this
    schedule: TrainConfig | None = None  # the No-Defense schedule replaced whole (None: the profile's, cut)


SMALL_RUN_SETTINGS = {
    "dry_run": SmallRun("dry_run", train_per_class=10, test_per_class=10, bundled_data=True, width=8,
                        width_on_cpu_only=True, max_batch=32),
    "plumbing": SmallRun("plumbing", train_per_class=20, test_per_class=5, bundled_data=False, width=4,
                         width_on_cpu_only=False, max_batch=50,
                         schedule=TrainConfig(epochs=1, batch_size=50, lr=0.05, schedule="cosine", augmentation="none")),
}
DRY_RUN = SMALL_RUN_SETTINGS["dry_run"]
DRY_RUN_TRAIN_PER_CLASS, DRY_RUN_TEST_PER_CLASS = DRY_RUN.train_per_class, DRY_RUN.test_per_class
DRY_RUN_MAX_BATCH, DRY_RUN_CPU_WIDTH = DRY_RUN.max_batch, DRY_RUN.width


def small_schedule(cfg: TrainConfig, small: SmallRun) -> TrainConfig:
    """The No-Defense schedule of a small run: ``small.schedule`` if it names one, else ``cfg`` cut to one epoch of at
    most ``small.max_batch`` images a step (its optimizer, schedule kind, augmentation and precision switches kept).
    One epoch writes no checkpoint: resuming is tested on its own (tests/test_resume.py)."""
    if small.schedule is not None:
        return small.schedule
    return cfg.with_(epochs=1, batch_size=min(cfg.batch_size, small.max_batch), checkpoint_every=1,
                     warmup_epochs=min(cfg.warmup_epochs, 1))


def small_width(width: int, small: SmallRun, device_type: str) -> int:
    return width if small.width_on_cpu_only and device_type != "cpu" else min(width, small.width)


def apply_overrides(cfg, overrides: dict):
    """``cfg`` (a frozen dataclass) with ``overrides`` applied: a dict value on a dataclass field is applied to that
    field's own config, recursively (``{"simclr": {"epochs": 1}}``). Unknown fields are errors."""
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{type(cfg).__name__} has no field {', '.join(unknown)}; fields: {', '.join(sorted(names))}")
    changes = {}
    for name, value in overrides.items():
        current = getattr(cfg, name)
        nested = isinstance(value, dict) and dataclasses.is_dataclass(current)
        changes[name] = apply_overrides(current, value) if nested else value
    return replace(cfg, **changes)


def dry_run_schedule(cfg: TrainConfig) -> TrainConfig:
    return small_schedule(cfg, DRY_RUN)


def dry_run_profile(profile: Profile) -> Profile:
    """The profile a dry run reports under: its outputs go to ``<profile>-dry-run`` (``tables/fast-dry-run``), so a
    dry run started outside ``run_all.sh`` never writes into a real run's folders."""
    return profile.with_(run_name=f"{profile.outputs}-dry-run")


def dry_run_datasets() -> tuple[str, ...]:
    """The datasets a dry run covers: CIFAR-10 (the bundled subset) and every dataset with a generated fixture of its
    on-disk layout (:mod:`backdoor_repro.dataset_fixtures`: GTSRB, CIFAR-100, ImageNet-12)."""
    from .dataset_fixtures import FIXTURE_LAYOUTS
    return ("cifar10",) + tuple(FIXTURE_LAYOUTS)


def check_dry_run(profile: Profile, data_root, download: bool) -> None:
    """A dry run exercises a full-data profile (cpu, fast, paper) on the bundled data (CIFAR-10) or on a small
    generated copy of its dataset in that dataset's layout: the smoke profile (already the short run), a dataset
    without such a copy, a data root or a download are errors, before any compute (and before any folder is made)."""
    if profile.name == "smoke":
        raise ValueError("--dry-run is for the full-data profiles (cpu, fast, paper); 'smoke' is itself the short run")
    if profile.dataset not in dry_run_datasets():
        raise ValueError(f"--dry-run covers {', '.join(dry_run_datasets())}, not {profile.dataset}")
    if data_root is not None or download:
        raise ValueError("--dry-run runs on the bundled CIFAR-10 images (as they are, or written in the dataset's "
                         "layout): drop --data-root / --download")


def check_device(profile: Profile, device: torch.device) -> None:
    """A GPU profile on a machine without a GPU is an error before any compute."""
    if profile.requires_gpu and device.type != "cuda":
        raise RuntimeError(f"profile {profile.name!r} needs a CUDA GPU (it trains on full datasets); "
                           f"this run's device is {device}. Use --profile smoke on a CPU machine.")
