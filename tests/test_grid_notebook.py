"""The grid notebook publishes no partial result silently: a cell of its grid without a result (failed, or not run)
stops it, unless ``keep_going`` is set; then its tables mark the missing cells (metric ``missing`` in grid_common, the
cell and its error in grid_missing). Runs the notebook itself (papermill) on the smoke profile, reading an empty
grid (``train=False``: nothing is trained)."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GRID = dict(profile="smoke", device="cpu", defenses="none,ft", attacks="grid3", train=False)


def run_grid_notebook(tmp_path, **parameters):
    import papermill
    return papermill.execute_notebook(str(REPO / "notebooks" / "grid.ipynb"), str(tmp_path / "grid.out.ipynb"),
                                      parameters={**GRID, **parameters}, cwd=str(REPO / "notebooks"),
                                      kernel_name="python3", progress_bar=False, log_output=False)


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path / "out" / "tables" / "smoke"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_missing_cells_fail_the_notebook_unless_it_keeps_going(tmp_path, folders):
    import pandas as pd
    from papermill.exceptions import PapermillExecutionError
    with pytest.raises(PapermillExecutionError) as failed:
        run_grid_notebook(tmp_path)
    assert failed.value.ename == "GridIncomplete" and "keep_going" in failed.value.evalue
    assert not (folders / "grid_common.csv").exists()  # stopped before any table
    run_grid_notebook(tmp_path, keep_going=True)
    missing = pd.read_csv(folders / "grid_missing.csv")
    assert sorted(missing["defense"]) == ["ft", "none"] and set(missing["status"]) == {"not run"}
    common = pd.read_csv(folders / "grid_common.csv")
    assert sorted(common.loc[common["metric"] == "missing", "defense"]) == ["ft", "none"]
