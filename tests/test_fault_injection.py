"""Fault injection: a run_all.sh run killed with SIGKILL five times (during training, again during the resumed
training, between stages, at a random moment of the next stage and while writing its outputs), then rerun, ends
with tables byte-identical to an uninterrupted run's, publishes nothing from a killed attempt, and leaves no stray
files (temporary files, partial checkpoints, staging folders, half-written notebooks).

The notebook is small but real library code: a smoke-profile experiment on 400 bundled images, the No-Defense
model (resumable, a checkpoint every epoch) and the FT defense on it, then two tables written a few seconds apart."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_run_all_outputs import REPO

NOTEBOOK = [
    ("profile = 'smoke'\ndevice = 'auto'\ndownload = False", ["parameters"]),
    ("""import os
import time
from pathlib import Path
import pandas as pd
from backdoor_repro import report
from backdoor_repro.data import class_balanced_subset
from backdoor_repro.experiment import setup
from backdoor_repro.train import TrainConfig

Path(os.environ["FAULT_KERNEL_PID"]).write_text(str(os.getpid()))  # the kernel runs in a session of its own
ex = setup(profile, quiet=True)
ex.train, ex.test = class_balanced_subset(ex.train, 40), class_balanced_subset(ex.test, 10)
schedule = TrainConfig(epochs=8, batch_size=50, lr=0.05, schedule="cosine", augmentation="none", checkpoint_every=1)
spec = ex.spec("grid3", defense="ft").with_(width=4, no_defense_schedule=schedule)
rows = []
for name in ("none", "ft"):
    result = ex.run(name, spec)
    rows.append({"defense": name, **ex.evaluate(result.model, spec)})
report.write_frame(pd.DataFrame(rows[:1]), "fault_first", profile)
time.sleep(4)  # the window in which the test kills the run while it writes its outputs
report.write_frame(pd.DataFrame(rows), "fault_all", profile)""", []),
]


def notebook() -> dict:
    return {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {"tags": tags}, "outputs": [],
                       "source": src} for src, tags in NOTEBOOK],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


class Checkout:
    """A checkout with run_all.sh and the notebook above, its own output folder and artifact cache."""

    def __init__(self, root: Path):
        self.root, self.out, self.cache = root / "checkout", root / "out", root / "cache"
        (self.root / "notebooks").mkdir(parents=True)
        shutil.copy(REPO / "run_all.sh", self.root)
        shutil.copytree(REPO / "scripts", self.root / "scripts")
        (self.root / "notebooks" / "attacks.ipynb").write_text(json.dumps(notebook()))
        self.kernel_pid = root / "kernel.pid"
        self.log = root / "run.log"
        self.env = {**os.environ, "BACKDOOR_REPRO_PYTHON": sys.executable, "BACKDOOR_REPRO_OUTPUT": str(self.out),
                    "BACKDOOR_REPRO_CACHE": str(self.cache), "FAULT_KERNEL_PID": str(self.kernel_pid)}

    def start(self) -> subprocess.Popen:
        self.kernel_pid.unlink(missing_ok=True)
        with open(self.log, "w") as log:
            return subprocess.Popen(["bash", "run_all.sh", "--only", "attacks"], cwd=self.root, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self) -> None:
        proc = self.start()
        proc.wait(timeout=240)
        assert proc.returncode == 0, self.log.read_text()[-3000:]

    def kill_when(self, condition, what: str) -> None:
        """Start a run and, the moment ``condition()`` holds, SIGKILL the kernel (which jupyter starts in a session
        of its own) and run_all.sh's whole process group (papermill, bash)."""
        proc = self.start()
        deadline = time.time() + 240
        while not condition():
            assert proc.poll() is None, f"the run ended before the kill point ({what}): {self.log.read_text()[-2000:]}"
            assert time.time() < deadline, f"kill point not reached in time: {what}"
            time.sleep(0.01)
        os.kill(int(self.kernel_pid.read_text()), signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def artifacts(self, stage: str, pattern: str) -> list[Path]:
        return list((self.cache / "artifacts" / stage).glob(pattern))

    def tables(self) -> dict[str, bytes]:
        folder = self.out / "tables" / "smoke"
        return {p.name: p.read_bytes() for p in sorted(folder.glob("fault_*"))} if folder.is_dir() else {}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_run_killed_five_times_ends_like_an_uninterrupted_one(tmp_path):
    reference = Checkout(tmp_path / "reference")
    reference.run()
    expected = reference.tables()
    assert set(expected) == {f"fault_{t}.{ext}" for t in ("first", "all") for ext in ("csv", "md", "tex")}

    faulty = Checkout(tmp_path / "faulty")
    # 1. during training: right after the No-Defense model's first checkpoint
    faulty.kill_when(lambda: faulty.artifacts("no_defense", "*.partial.pt.sha256"), "during training")
    assert not faulty.artifacts("no_defense", "*.json")  # the stage did not finish; its checkpoint is complete:
    assert faulty.artifacts("no_defense", "*.partial.pt")  # the rerun resumes from it (not from scratch)
    # 2. during the resumed training: once it has written a newer checkpoint (a stage resumed twice)
    seal, = faulty.artifacts("no_defense", "*.partial.pt.sha256")
    first = seal.stat().st_mtime_ns
    faulty.kill_when(lambda: seal.exists() and seal.stat().st_mtime_ns > first, "during the resumed training")
    assert not faulty.artifacts("no_defense", "*.json") and faulty.artifacts("no_defense", "*.partial.pt")
    # 3. between stages: the No-Defense model stored, the FT stage not yet
    faulty.kill_when(lambda: faulty.artifacts("no_defense", "*.json"), "between stages")
    assert not faulty.artifacts("ft", "*.json")
    # 4. at a random moment of the FT stage (from the moment its build takes the artifact's lock)
    pause = random.Random(4).uniform(0.0, 0.3)  # a fixed draw, so a failure can be replayed
    faulty.kill_when(lambda: faulty.artifacts("ft", "*.lock") and time.sleep(pause) is None, "during FT")
    # 5. while writing outputs: the first table written into the staging folder, the second not yet
    faulty.kill_when(lambda: list(faulty.out.glob(".staging-*/tables/smoke/fault_first.csv")), "while writing outputs")
    assert faulty.tables() == {}  # a killed attempt publishes nothing
    faulty.run()

    assert faulty.tables() == expected  # byte for byte
    stray = [p for p in (*faulty.out.rglob("*"), *faulty.cache.rglob("*"), *faulty.root.rglob("*"))
             if p.name.startswith(".staging-") or ".tmp" in p.name or p.name.endswith(".partial.pt")
             or p.name.endswith(".running.ipynb")]
    assert not stray, stray
