"""The dry run of every dataset a profile names: a small copy of GTSRB, CIFAR-100 or ImageNet-12 in that dataset's
own on-disk layout is written from the bundled CIFAR-10 images and read by the real loaders; the headers name the
dataset that runs; a refused dry run leaves no folder behind; and the fast dry run of the trap_and_replace notebook
passes on GTSRB."""
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from backdoor_repro.data import dataset_layout, load_dataset
from backdoor_repro.dataset_fixtures import FIXTURE_LAYOUTS, write_fixture
from backdoor_repro.datasets import dataset_info

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = {"gtsrb": "release", "cifar100": "torchvision", "imagenet12": "folder"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", sorted(FIXTURE_LAYOUTS))
def test_a_fixture_is_the_datasets_own_layout_and_loads_through_its_loader(name, tmp_path):
    root = write_fixture(name, tmp_path / "fixtures", 2, 1)
    assert write_fixture(name, tmp_path / "fixtures", 2, 1) == root  # written once, then reused
    assert dataset_layout(name, root) == LAYOUTS[name]
    info = dataset_info(name)
    with warnings.catch_warnings():  # CIFAR-100's pickles are not the release's (md5): a warning says so
        warnings.simplefilter("ignore")
        train, test = load_dataset(name, "train", root), load_dataset(name, "test", root)
    assert len(train) == 2 * info.num_classes and len(test) == info.num_classes
    assert train.images.shape[-1] == info.image_size and train.layout == LAYOUTS[name]
    assert sorted(set(train.labels.tolist())) == list(range(info.num_classes))
    assert sorted(set(test.labels.tolist())) == list(range(info.num_classes))


@pytest.mark.parametrize("dataset", ["gtsrb", "cifar100"])
def test_a_dry_run_on_another_dataset_loads_its_copy_and_names_it(dataset, capsys):
    from backdoor_repro.experiment import setup
    ex = setup("fast", device="cpu", dataset=dataset, dry_run=True)
    out = capsys.readouterr().out
    info = dataset_info(dataset)
    assert ex.profile.dataset == dataset and ex.profile.outputs == f"fast-{dataset}-dry-run"
    assert ex.train.num_classes == info.num_classes and len(ex.train) == 10 * info.num_classes
    assert ex.train.layout == LAYOUTS[dataset]
    name = {"gtsrb": "GTSRB", "cifar100": "CIFAR-100"}[dataset]
    assert f"full {name}" in out and not re.search(r"full CIFAR-10(?!0)", out) and f"{name} copy" in out


def test_headers_name_the_dataset_that_runs(capsys):
    from backdoor_repro.experiment import header_lines, print_header
    from backdoor_repro.profiles import profile_for
    import torch
    for profile in ("fast", "paper"):
        p = profile_for(profile, "gtsrb")
        description, lines = header_lines(p)
        assert "CIFAR-10" not in description and "GTSRB" in description
        assert not any("torchvision's CIFAR-10 files" in line for line in lines)
        print_header(p, ("trap_and_replace",), None, torch.device("cpu"), None)
        out = capsys.readouterr().out
        assert "full CIFAR-10" not in out and "GTSRB" in out.splitlines()[0]
    assert "CIFAR-100" in header_lines(profile_for("fast", "cifar100"))[0]
    smoke = profile_for("smoke")
    assert header_lines(smoke) == (smoke.description, smoke.deviations + smoke.model_deviations)  # unchanged


def run_all(*args, tmp_path, **env):
    full = {**os.environ, "BACKDOOR_REPRO_PYTHON": sys.executable, "TMPDIR": str(tmp_path / "tmp"), **env}
    full.pop("BACKDOOR_REPRO_OUTPUT", None)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(["bash", str(REPO / "run_all.sh"), *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=110)


@pytest.mark.parametrize("args, message", [
    (["--profile", "smoke", "--dry-run"], "is itself the short run"),
    (["--profile", "fast", "--dry-run", "--dataset", "cifar10-smoke"], "--dry-run covers"),
    (["--profile", "fast", "--dry-run", "--download"], "drop --data-root / --download"),
])
def test_a_refused_dry_run_leaves_no_folder_behind(args, message, tmp_path):
    out = run_all(*args, tmp_path=tmp_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert not list((tmp_path / "tmp").iterdir())  # the dry run's temporary folder is gone too


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_fast_dry_run_of_trap_and_replace_passes_on_a_gtsrb_copy(tmp_path):
    """Through run_all.sh: preflight, the fixture written into the dry run's folder, the release loader, the notebook
    with the fast profile's GTSRB branches (target 1, the shuffled holdout, GTSRB's attacks)."""
    env = {**os.environ, "BACKDOOR_REPRO_PYTHON": sys.executable, "BACKDOOR_REPRO_OUTPUT": str(tmp_path / "dry")}
    out = subprocess.run(["bash", str(REPO / "run_all.sh"), "--only", "trap_and_replace", "--profile", "fast",
                          "--dataset", "gtsrb", "--dry-run", "--device", "cpu"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=580)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    name = "fast-gtsrb-dry-run"
    executed = tmp_path / "dry" / "notebooks" / "executed" / name / "trap_and_replace.ipynb"
    assert executed.exists() and "GTSRB copy" in executed.read_text()
    assert (tmp_path / "dry" / "tables" / name / "tr_main.csv").stat().st_size > 0
    assert (tmp_path / "dry" / ".cache" / "dry-run-data").is_dir()  # the fixture is in the dry run's folder
    assert not (REPO / "tables" / name).exists()
