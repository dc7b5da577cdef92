"""Test session setup: results and artifacts of the test run go to a temporary folder.

Set before any test (and before nbval starts a kernel, which inherits the environment), so
re-executed notebooks never overwrite the committed figures/ and tables/. The artifact cache is shared
by the whole session: the BadNets model trained by the unit test is the one the notebook reuses.
"""
import os
import tempfile

import pytest
import torch

_session_dir = tempfile.mkdtemp(prefix="backdoor-repro-tests-")
os.environ.setdefault("BACKDOOR_REPRO_OUTPUT", os.path.join(_session_dir, "out"))
os.environ.setdefault("BACKDOOR_REPRO_CACHE", os.path.join(_session_dir, "cache"))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def smoke_train():
    from backdoor_repro import load_dataset
    return load_dataset("cifar10-smoke", "train")


@pytest.fixture(scope="session")
def smoke_test():
    from backdoor_repro import load_dataset
    return load_dataset("cifar10-smoke", "test")


@pytest.fixture
def gray_images():
    """Four uniform images with values 0, 100, 200, 255."""
    return torch.stack([torch.full((3, 32, 32), v, dtype=torch.uint8) for v in (0, 100, 200, 255)])
