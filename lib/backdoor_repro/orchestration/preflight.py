"""Check a run's settings before any compute: ``python -m backdoor_repro.orchestration.preflight --profile smoke``.

Exits non-zero with a clear message for an unknown profile, a device other than CPU / CUDA, a GPU profile on a
machine without one, a dataset that is neither on disk nor allowed to download, a data root or download request
that the profile would ignore, an unknown attack in ``--attacks``, a ``--dry-run`` of the smoke profile, of a dataset
without a dry-run copy, or with a data root, a ``BACKDOOR_REPRO_THREADS`` that is not a positive whole number, or an
output or cache folder that cannot be written. ``run_all.sh`` and the grid's command line
(:mod:`backdoor_repro.orchestration.grid`) run the same checks (:func:`check_run`, :func:`check_threads`,
:func:`check_writable`).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import torch

from ..data import DatasetUnavailable, check_dataset_available
from ..experiment import parse_attack_subset
from ..numerics import pinned_threads
from ..paths import cache_dir, output_root
from ..profiles import Profile, check_data_arguments, check_device, check_dry_run, profile_for
from ..train import resolve_device

PREFLIGHT_ERRORS = (ValueError, RuntimeError, DatasetUnavailable)  # what a refused run raises


def check_writable(folder: Path, variable: str, create: bool = True) -> None:
    """Write and remove a file in ``folder`` (created if needed; with ``create=False`` nothing is created: the nearest
    folder that exists above it is tried instead); a clear error naming it and ``variable`` otherwise."""
    folder = Path(folder).absolute()
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        probe = next(p for p in (folder, *folder.parents) if p.exists())
        if not probe.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(probe))
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".preflight-"):
            pass
    except OSError as error:
        raise RuntimeError(f"{folder} cannot be written ({error.strerror}): make it writable, or point {variable} "
                           "at a folder that is") from error


def check_threads() -> int:
    """``BACKDOOR_REPRO_THREADS`` (the CPU thread count every run pins): a positive whole number, or unset."""
    return pinned_threads()


def _device_named(device: str) -> torch.device:
    """``device``'s spelling checked without looking for it (for jobs that run on other machines)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(device)):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device("cuda" if str(device) == "auto" else device)


def check_run(profile: str, device: str = "auto", data_root=None, download: bool = False, dataset: str | None = None,
              attacks=None, dry_run: bool = False, need_device: bool = True) -> tuple[Profile, torch.device]:
    """The checks of one run before any compute: the profile (on ``dataset``), the attack slice, the device (a GPU
    profile needs one, unless ``need_device`` is False: jobs submitted to other machines), the data (on disk or to
    be downloaded, and not ignored by the profile) or the dry run's settings. Returns the profile and the device."""
    p = profile_for(profile, dataset)
    parse_attack_subset(attacks)
    dev = resolve_device(device) if need_device else _device_named(device)
    if dry_run:
        check_dry_run(p, data_root, download)
        return p, dev
    if need_device:
        check_device(p, dev)
    check_data_arguments(p, data_root, download)
    check_dataset_available(p.dataset, data_root, download)
    return p, dev


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backdoor_repro.orchestration.preflight", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--download", action="store_true")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--attacks", default=None, help="a slice: comma-separated attack keys")
    ap.add_argument("--dry-run", action="store_true", help="a GPU profile cut to a couple of steps, on bundled data")
    args = ap.parse_args(argv)
    try:
        profile, device = check_run(args.profile, args.device, args.data_root, args.download, args.dataset,
                                    args.attacks, args.dry_run)
        check_threads()
        for folder, variable in ((output_root(), "BACKDOOR_REPRO_OUTPUT"), (cache_dir(), "BACKDOOR_REPRO_CACHE")):
            check_writable(folder, variable)
    except PREFLIGHT_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    what = "dry run on the bundled images" if args.dry_run else f"dataset {profile.dataset}"
    print(f"preflight ok: profile {profile.name}, device {device}, {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
