"""Where the package finds its bundled files and where runs write theirs.

``BACKDOOR_REPRO_OUTPUT`` and ``BACKDOOR_REPRO_CACHE`` may be relative: they are taken relative to the working
directory of the process when it first asks (:func:`output_root`, :func:`cache_dir`), and written back into the
environment as absolute paths, so that the same process after a ``chdir`` and the processes it starts (kernels,
workers) use the same folders. ``run_all.sh`` and ``run_tests.sh`` make them absolute against the folder they were
called from before starting anything (``scripts/ensure_env.sh``), since their kernels run in ``notebooks/``.
"""
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


def folder_from_env(variable: str) -> Path | None:
    """The folder named by environment ``variable`` (None: unset or empty), absolute; a relative value is pinned
    against the current working directory (see the module's docstring)."""
    value = os.environ.get(variable)
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute():
        path = Path.cwd() / path
        os.environ[variable] = str(path)
    return path.resolve()


def output_root() -> Path:
    """Where ``figures/`` and ``tables/`` are written: ``BACKDOOR_REPRO_OUTPUT`` or the project root.

    Tests point it at a temporary folder, so re-executing a notebook never touches committed results.
    """
    return folder_from_env("BACKDOOR_REPRO_OUTPUT") or project_root()


def cache_dir() -> Path:
    """Artifact cache: ``BACKDOOR_REPRO_CACHE`` or ``<project root>/.cache``."""
    return folder_from_env("BACKDOOR_REPRO_CACHE") or project_root() / ".cache"
