"""run_all.sh publishes a notebook's tables and figures only once the notebook has passed: a failing notebook leaves
the previous outputs untouched and no staging folder behind."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fake_notebook(fail: bool, value: int) -> dict:
    cells = [("profile = 'smoke'\ndevice = 'auto'\ndownload = False", ["parameters"]),
             (f"import pandas as pd\nfrom backdoor_repro import report\n"
              f"report.write_frame(pd.DataFrame({{'value': [{value}]}}), 'fake', profile)", []),
             ("raise RuntimeError('the check failed')" if fail else "print('checks passed')", [])]
    return {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {"tags": tags}, "outputs": [],
                       "source": src} for src, tags in cells],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.mark.slow
def test_a_failing_notebook_publishes_nothing(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "run_all.sh", checkout)
    shutil.copytree(REPO / "scripts", checkout / "scripts")
    out = tmp_path / "out"
    env = {**os.environ, "BACKDOOR_REPRO_PYTHON": sys.executable, "BACKDOOR_REPRO_OUTPUT": str(out)}

    def run(fail, value):
        (checkout / "notebooks" / "attacks.ipynb").write_text(json.dumps(fake_notebook(fail, value)))
        return subprocess.run(["bash", "run_all.sh", "--only", "attacks"], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=240)

    first = run(False, 1)
    assert first.returncode == 0, first.stderr
    table = out / "tables" / "smoke" / "fake.csv"
    assert table.read_text().split() == ["value", "1"]
    failed = run(True, 2)
    assert failed.returncode != 0 and "were not published" in failed.stderr
    assert table.read_text().split() == ["value", "1"]  # the passing run's output, untouched
    assert not list(out.glob(".staging-*"))
    assert (checkout / "notebooks" / "executed" / "smoke" / "failed" / "attacks.ipynb").exists()
