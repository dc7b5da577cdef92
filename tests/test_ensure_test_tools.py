"""scripts/ensure_test_tools.sh, which run_tests.sh calls: the headless Chromium of tests/test_site.py and the
pdflatex + booktabs of tests/test_table_files.py are installed with apt-get where missing and this runs as root (CI, a
container), never elsewhere or when opted out, only the missing ones, and a failed install never fails the test run
(those tests are then skipped, naming what is missing)."""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "ensure_test_tools.sh"
ALL = "chromium chromium-driver texlive-latex-base texlive-latex-recommended"


def fake_bin(tmp_path: Path, uid: str, apt_status: int = 0, present=()) -> Path:
    """A PATH with only the tools in ``present``, ``id -u`` printing ``uid`` and an apt-get that records its
    arguments (a present ``kpsewhich`` finds booktabs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mktemp", "rm", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    scripts = {"id": f"echo {uid}", "apt-get": f'echo "$@" >> "{tmp_path}/apt.log"\nexit {apt_status}',
               **{tool: "echo /somewhere/booktabs.sty" if tool == "kpsewhich" else "exit 0" for tool in present}}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run_script(tmp_path, uid="0", opt_out="", apt_status=0, present=()):
    env = {"PATH": str(fake_bin(tmp_path, uid, apt_status, present)), "TMPDIR": str(tmp_path),
           "BACKDOOR_REPRO_NO_TOOL_INSTALL": opt_out}
    run = subprocess.run([shutil.which("bash"), str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    log = (tmp_path / "apt.log").read_text().splitlines() if (tmp_path / "apt.log").exists() else []
    return run, log


@pytest.mark.timeout(120)
@pytest.mark.parametrize("uid, opt_out, installs", [("0", "", True), ("1000", "", False), ("0", "1", False)])
def test_the_tools_are_installed_with_apt_only_as_root_and_unless_opted_out(tmp_path, uid, opt_out, installs):
    run, log = run_script(tmp_path, uid, opt_out)
    assert run.returncode == 0, run.stderr
    if installs:
        assert "update" in log[0].split()
        assert log[1].endswith(f"install -y -qq --no-install-recommends {ALL}")
        assert "Installing chromium" in run.stderr and not list(tmp_path.glob("backdoor-repro-tools-*.log"))
    else:
        assert log == [] and run.stderr == ""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("present, wanted", [
    (("chromium", "chromedriver"), "texlive-latex-base texlive-latex-recommended"),
    (("chromium", "chromedriver", "pdflatex"), "texlive-latex-recommended"),
    (("pdflatex", "kpsewhich"), "chromium chromium-driver"),
    (("chromium", "chromedriver", "pdflatex", "kpsewhich"), None)])
def test_only_the_missing_packages_are_installed(tmp_path, present, wanted):
    run, log = run_script(tmp_path, present=present)
    assert run.returncode == 0, run.stderr
    if wanted is None:
        assert log == [] and run.stderr == ""
    else:
        assert log[1].endswith(f"--no-install-recommends {wanted}")


@pytest.mark.timeout(120)
def test_a_failed_install_never_fails_the_test_run(tmp_path):
    run, _ = run_script(tmp_path, apt_status=100)
    assert run.returncode == 0 and "will be skipped" in run.stderr
