"""CITATION.cff is valid Citation File Format 1.2.0: ``cffconvert --validate`` where cffconvert is installed, and
everywhere a check of the keys that CFF 1.2.0 requires and of the ones this project promises (authors, version,
release date; the version pyproject.toml gives)."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CITATION = Path(__file__).resolve().parents[1] / "CITATION.cff"


def _cffconvert() -> list[str] | None:
    """The command that runs cffconvert: its script on PATH, or this interpreter where the package is importable."""
    if shutil.which("cffconvert"):
        return [shutil.which("cffconvert")]
    try:
        import cffconvert.cli.cli  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-c", "from cffconvert.cli.cli import cli; cli()"]


@pytest.mark.skipif(_cffconvert() is None, reason="cffconvert is not installed (pip install cffconvert)")
def test_cffconvert_validates_the_citation_file():
    run = subprocess.run(_cffconvert() + ["--validate", "-i", str(CITATION)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "valid" in run.stdout


def test_the_citation_file_has_every_key_cff_1_2_0_requires():
    cff = yaml.safe_load(CITATION.read_text())
    assert cff["cff-version"] == "1.2.0"
    assert isinstance(cff["message"], str) and cff["message"].strip()
    assert isinstance(cff["title"], str) and cff["title"].strip()
    authors = cff["authors"]
    assert isinstance(authors, list) and authors
    assert all(isinstance(a, dict) and (a.get("name") or a.get("family-names")) for a in authors)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(cff["date-released"]))
    version = re.search(r'^version = "([^"]+)"', (CITATION.parent / "pyproject.toml").read_text(), re.M).group(1)
    assert str(cff["version"]) == version
    assert str(cff.get("repository-code", "https://")).startswith("https://")
    for reference in cff.get("references", []):  # each cited paper is itself complete
        assert reference["title"] and reference["authors"] and reference["type"]
