"""Where the package finds its bundled files and where runs write theirs."""
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
TRIGGERS_DIR = ASSETS_DIR / "triggers"
SMOKE_BUNDLE = ASSETS_DIR / "cifar10_smoke.npz"


def project_root() -> Path:
    """The repository root when running from a checkout, else the working directory."""
    candidate = PACKAGE_DIR.parent.parent
    if (candidate / "run_all.sh").exists():
        return candidate
    return Path.cwd()


def output_root() -> Path:
    """Where ``figures/`` and ``tables/`` are written: ``BACKDOOR_REPRO_OUTPUT`` or the project root.

    Tests point it at a temporary folder, so re-executing a notebook never touches committed results.
    """
    env = os.environ.get("BACKDOOR_REPRO_OUTPUT")
    return Path(env).resolve() if env else project_root()


def cache_dir() -> Path:
    """Artifact cache: ``BACKDOOR_REPRO_CACHE`` or ``<project root>/.cache``."""
    env = os.environ.get("BACKDOOR_REPRO_CACHE")
    return Path(env).resolve() if env else project_root() / ".cache"
