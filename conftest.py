"""Results and artifacts of a test run go to a temporary folder, whatever paths pytest is given.

Set at import, before any test and before nbval starts a kernel (which inherits the environment), so re-executed
notebooks never overwrite the committed figures/ and tables/, also when one executed notebook is run alone. The
artifact cache is shared by the whole session: the BadNets model a unit test trains is the one a notebook reuses.
"""
import os
import tempfile

_session_dir = tempfile.mkdtemp(prefix="backdoor-repro-tests-")
os.environ.setdefault("BACKDOOR_REPRO_OUTPUT", os.path.join(_session_dir, "out"))
os.environ.setdefault("BACKDOOR_REPRO_CACHE", os.path.join(_session_dir, "cache"))
os.environ.setdefault("MPLBACKEND", "Agg")


# the smoke numbers this machine produced, printed at the end of the run with the CPU that made them: smoke numbers
# move by a few points between CPU types (ARCHITECTURE.md, reproducibility), and CI's log is where a second CPU's numbers are
# read off (the executed notebooks write them under the session's temporary output folder, nowhere else)
HEADLINE_TABLES = ("no_defense", "dbd_table1", "tr_main", "fct_t1", "fmp_t1")


def pytest_terminal_summary(terminalreporter):
    from pathlib import Path
    tables = Path(os.environ["BACKDOOR_REPRO_OUTPUT"]) / "tables" / "smoke"
    found = [tables / f"{name}.csv" for name in HEADLINE_TABLES if (tables / f"{name}.csv").is_file()]
    if not found:
        return
    import pandas as pd
    from backdoor_repro.numerics import cpu_numerics
    from backdoor_repro.report import cpu_model, wide
    terminalreporter.section("smoke numbers of this run")
    terminalreporter.write_line(f"cpu: {cpu_model()}, numerics {cpu_numerics()}")
    for path in found:
        df = pd.read_csv(path)
        df = df[df["metric"].isin(["ACC", "ASR"]) & (df.get("seed", 0) == 0)]
        cells = wide(df, ["attack", "defense"], "metric").reset_index()
        terminalreporter.write_line(path.stem + ": " + "; ".join(
            f"{r.attack}/{r.defense} {r.ACC:g}/{r.ASR:g}" for r in cells.itertuples()))
