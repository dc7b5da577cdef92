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
