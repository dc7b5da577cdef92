"""Check a run's settings before any compute: ``python -m backdoor_repro.orchestration.preflight --profile smoke``.

Exits non-zero with a clear message for an unknown profile, a device other than CPU / CUDA, a GPU profile on a
machine without one, a dataset that is neither on disk nor allowed to download, a data root or download request
that the profile would ignore, an unknown attack in ``--attacks``, a ``--dry-run`` of the smoke profile or with a
data root, or an output or cache folder that cannot be written.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..data import DatasetUnavailable, check_dataset_available
from ..experiment import parse_attack_subset
from ..paths import cache_dir, output_root
from ..profiles import check_data_arguments, check_device, check_dry_run, profile_for
from ..train import resolve_device


def check_writable(folder: Path, variable: str) -> None:
    """Create ``folder`` if needed and write and remove a file in it; a clear error naming it otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".preflight-"):
            pass
    except OSError as error:
        raise RuntimeError(f"{folder} cannot be written ({error.strerror}): make it writable, or point {variable} "
                           "at a folder that is") from error


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
        profile = profile_for(args.profile, args.dataset)
        parse_attack_subset(args.attacks)
        device = resolve_device(args.device)
        if args.dry_run:
            check_dry_run(profile, args.data_root, args.download)
        else:
            check_device(profile, device)
            check_data_arguments(profile, args.data_root, args.download)
            check_dataset_available(profile.dataset, args.data_root, args.download)
        for folder, variable in ((output_root(), "BACKDOOR_REPRO_OUTPUT"), (cache_dir(), "BACKDOOR_REPRO_CACHE")):
            check_writable(folder, variable)
    except (ValueError, RuntimeError, DatasetUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    what = "dry run on the bundled subset" if args.dry_run else f"dataset {profile.dataset}"
    print(f"preflight ok: profile {profile.name}, device {device}, {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
