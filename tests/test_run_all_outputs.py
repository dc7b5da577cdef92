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


FAILURES = {"check": "raise RuntimeError('the check failed')",
            "budget": "from backdoor_repro.deadline import TimeBudgetExhausted\nraise TimeBudgetExhausted('spent')"}


def fake_notebook(fail, value: int) -> dict:
    """``fail``: False, True (a failing check) or "budget" (a stage stopped at the --max-minutes deadline)."""
    last = FAILURES["budget" if fail == "budget" else "check"] if fail else "print('checks passed')"
    cells = [("profile = 'smoke'\ndevice = 'auto'\ndownload = False", ["parameters"]),
             (f"import pandas as pd\nfrom backdoor_repro import report\n"
              f"report.write_frame(pd.DataFrame({{'value': [{value}]}}), 'fake', profile)", []),
             (last, [])]
    return {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {"tags": tags}, "outputs": [],
                       "source": src} for src, tags in cells],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def fake_checkout(tmp_path):
    """A checkout with run_all.sh and one fake notebook; ``run(fail, value, *args, **env)`` runs it."""
    checkout = tmp_path / "checkout"
    (checkout / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "run_all.sh", checkout)
    shutil.copytree(REPO / "scripts", checkout / "scripts")
    out = tmp_path / "out"

    def run(fail, value, *args, **extra_env):
        (checkout / "notebooks" / "attacks.ipynb").write_text(json.dumps(fake_notebook(fail, value)))
        env = {**os.environ, "BACKDOOR_REPRO_PYTHON": sys.executable, "BACKDOOR_REPRO_OUTPUT": str(out), **extra_env}
        return subprocess.run(["bash", "run_all.sh", "--only", "attacks", *args], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=240)
    return checkout, out, run


@pytest.mark.slow
def test_a_failing_notebook_publishes_nothing(tmp_path):
    checkout, out, run = fake_checkout(tmp_path)

    first = run(False, 1)
    assert first.returncode == 0, first.stderr
    table = out / "tables" / "smoke" / "fake.csv"
    assert table.read_text().split() == ["value", "1"]
    failed = run(True, 2)
    assert failed.returncode != 0 and "were not published" in failed.stderr
    assert table.read_text().split() == ["value", "1"]  # the passing run's output, untouched
    assert not list(out.glob(".staging-*"))
    assert (checkout / "notebooks" / "executed" / "smoke" / "failed" / "attacks.ipynb").exists()


@pytest.mark.slow
def test_a_run_stopped_at_its_time_budget_exits_75_and_publishes_nothing(tmp_path):
    checkout, out, run = fake_checkout(tmp_path)
    assert run(False, 1, "--max-minutes", "30").returncode == 0
    table = out / "tables" / "smoke" / "fake.csv"
    stopped = run("budget", 2, "--max-minutes", "30")
    assert stopped.returncode == 75, stopped.stderr
    assert "Rerun the same command to continue" in stopped.stderr and "in notebook 'attacks'" in stopped.stderr
    assert table.read_text().split() == ["value", "1"]  # nothing published, nothing marked as failed
    assert not (checkout / "notebooks" / "executed" / "smoke" / "failed").exists()
    assert not list(out.glob(".staging-*"))
    # a deadline already passed (set by a wrapper, e.g. a cluster job's end): stops before the first notebook
    before = run(False, 3, BACKDOOR_REPRO_DEADLINE="1")
    assert before.returncode == 75 and "before notebook 'attacks'" in before.stderr
    assert table.read_text().split() == ["value", "1"]
