"""Check a run's settings before any compute: ``python -m backdoor_repro.preflight --profile smoke``.

Exits non-zero with a clear message for an unknown profile, a GPU profile on a machine without one,
a dataset that is neither on disk nor allowed to download, or an unknown attack in ``--attacks``.
"""
from __future__ import annotations

import argparse
import sys

from .data import DatasetUnavailable, check_dataset_available
from .experiment import parse_attack_subset
from .profiles import check_device, profile_for
from .train import resolve_device


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backdoor_repro.preflight", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--download", action="store_true")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--attacks", default=None, help="a slice: comma-separated attack keys")
    args = ap.parse_args(argv)
    try:
        profile = profile_for(args.profile, args.dataset)
        parse_attack_subset(args.attacks)
        device = resolve_device(args.device)
        check_device(profile, device)
        check_dataset_available(profile.dataset, args.data_root, args.download)
    except (ValueError, RuntimeError, DatasetUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"preflight ok: profile {profile.name}, device {device}, dataset {profile.dataset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
