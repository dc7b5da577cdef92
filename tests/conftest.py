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


from backdoor_repro.numerics import pin_cpu_threads  # noqa: E402  (after the environment above)

pin_cpu_threads()  # the same thread count as every smoke run, whatever the machine's core count

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


@pytest.fixture
def gray_images():
    """Four uniform images with values 0, 100, 200, 255."""
    return torch.stack([torch.full((3, 32, 32), v, dtype=torch.uint8) for v in (0, 100, 200, 255)])
