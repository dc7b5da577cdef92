"""Test session setup for tests/: the pinned thread count and every test's time limit."""
import pytest
import torch

# the output and cache folders are set by the repository's root conftest.py, which pytest loads for every path
# (this file applies to tests/ only: run on a notebook alone, the executed notebook would write into tables/)


import atexit
import os
import shutil
import tempfile

from backdoor_repro.numerics import pin_cpu_threads

pin_cpu_threads()  # the same thread count as every smoke run, whatever the machine's core count

# torch.compile's kernels from a fresh folder: a machine's shared inductor cache may hold kernels built under other
# CPU kernel caps, which inductor's cache key does not tell apart (numerics.inductor_cache_dir)
_INDUCTOR_CACHE = tempfile.mkdtemp(prefix="backdoor-repro-inductor-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = _INDUCTOR_CACHE
atexit.register(shutil.rmtree, _INDUCTOR_CACHE, ignore_errors=True)

UNIT_TIMEOUT, SLOW_TIMEOUT, NOTEBOOK_CELL_TIMEOUT = 120, 300, 900


def pytest_collection_modifyitems(items):
    """A time limit for every test that does not set its own: a hang fails in minutes, with its name."""
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        if "notebooks" in item.path.parts:
            limit = NOTEBOOK_CELL_TIMEOUT
        elif item.get_closest_marker("slow") is not None:
            limit = SLOW_TIMEOUT
        else:
            limit = UNIT_TIMEOUT
        item.add_marker(pytest.mark.timeout(limit))


@pytest.fixture(scope="session")
def smoke_train():
    from backdoor_repro import load_dataset
    return load_dataset("cifar10-smoke", "train")


@pytest.fixture(scope="session")
def smoke_test():
    from backdoor_repro import load_dataset
    return load_dataset("cifar10-smoke", "test")


@pytest.fixture(scope="module")
def tiny(smoke_train, smoke_test):
    """200 training and 50 test images of the bundled subset (defense_fixtures.py builds specs and data on them)."""
    from backdoor_repro.data import class_balanced_subset
    return class_balanced_subset(smoke_train, 20), class_balanced_subset(smoke_test, 5)


@pytest.fixture
def gray_images():
    """Four uniform images with values 0, 100, 200, 255."""
    return torch.stack([torch.full((3, 32, 32), v, dtype=torch.uint8) for v in (0, 100, 200, 255)])
