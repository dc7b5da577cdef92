"""File what ``scripts/gpu_session.py`` brought back from a GPU machine into the repository.

    python scripts/collect_gpu_session.py FOLDER      # FOLDER holds summary.json, results.tar.gz, session.log

- ``tables/gpu_sessions/<stamp>.json``: the session's record: GPU, torch, commit, every step's status and seconds,
  the dry run's verdict per notebook (with the error of each failed one), the benchmark per stage, what was filed.
- ``tables/gpu_sessions/<stamp>/``: the session's real-run outputs as they came (tables, figures, executed notebooks
  of the fast / paper runs), so a slice's partial tables are kept whole and never overwrite another session's.
- ``tables/<run>/``, ``figures/<run>/``, ``notebooks/executed/<run>/``: a notebook's outputs also go here when that
  notebook ran complete (no ``--attacks`` slice), as ``run_all.sh`` would have published them.
- ``tables/benchmarks/gpu_<stamp>.json``: the benchmark stages, each with its provenance.
- ``tables/gpu_sessions/README.md``: one line per session, remade from the records.
The raw files are kept under ``.cache/gpu_sessions/<stamp>/`` (ignored by git) for debugging. A rehearsal (CPU) session
is refused unless ``--rehearsal`` is given (tests), and nothing is written before the whole archive has been checked.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parent.parent
RUN_NAME = re.compile(r"^(fast|paper)(-[a-z0-9-]+)?$")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member, checked: regular files under relative paths without '..' (anything else is an error)."""
    members = []
    for member in tar.getmembers():
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or not member.isfile():
            raise ValueError(f"unsafe member in the archive: {member.name!r}")
        members.append(member)
    return members


def dry_run_verdicts(names: list[str], read) -> dict:
    """Per notebook of the dry run: passed (an executed copy) or failed (the copy under failed/, with its error)."""
    verdicts = {}
    for name in names:
        parts = PurePosixPath(name).parts
        if parts[:3] != ("dryrun", "notebooks", "executed") or not name.endswith(".ipynb"):
            continue
        notebook = PurePosixPath(name).stem
        if "failed" in parts:
            verdicts[notebook] = {"status": "failed", "error": notebook_error(json.loads(read(name)))}
        else:
            verdicts.setdefault(notebook, {"status": "passed"})
    return verdicts


def notebook_error(notebook: dict) -> str:
    """The first error output of an executed notebook: its name, value and the traceback's last lines."""
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                tail = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in output.get("traceback", [])[-3:]]
                return f"{output.get('ename')}: {output.get('evalue')}\n" + "\n".join(tail)
    return "no error output found"


def run_records(names: list[str], read) -> dict:
    """The real runs' ``<notebook>_run.json`` by run name and notebook."""
    records = {}
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) == 4 and parts[:2] == ("run", "tables") and parts[3].endswith("_run.json"):
            records[(parts[2], parts[3][: -len("_run.json")])] = json.loads(read(name))
    return records


def destination(name: str, complete_runs: set[str], allow_dry: bool) -> str | None:
    """Where a real-run file goes at the repository's top level: only into tables/<run>/, figures/<run>/ and
    notebooks/executed/<run>/ of a GPU profile's run that was complete in this session (no slice), never a failure."""
    parts = PurePosixPath(name).parts
    if parts[0] != "run" or len(parts) < 4:
        return None
    if parts[1] in ("tables", "figures"):
        run = parts[2]
    elif parts[1:3] == ("notebooks", "executed") and len(parts) >= 5:
        run = parts[3]
    else:
        return None  # anything else in the archive stays in the session's folder only
    if not RUN_NAME.match(run) or (run.endswith("-dry-run") and not allow_dry) or run not in complete_runs:
        return None
    if "failed" in parts:
        return None
    return "/".join(parts[1:])


def collect(folder: Path, repo: Path = REPO, rehearsal_ok: bool = False) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    if summary.get("rehearsal") and not rehearsal_ok:
        raise SystemExit("this is a CPU rehearsal, not a GPU session: nothing to file (use --rehearsal in tests)")
    environment = summary.get("environment") or {}
    gpu = environment.get("gpu") or ("CPU rehearsal" if summary.get("rehearsal") else "unknown")
    stamp = re.sub(r"[^0-9]", "", summary["started"])[:14] + "-" + slug(gpu)  # to the second
    archive = folder / "results.tar.gz"
    with tarfile.open(archive) as tar:
        members = safe_members(tar)
        names = [m.name for m in members]
        contents = {m.name: tar.extractfile(m).read() for m in members}
    read = contents.__getitem__
    verdicts = dry_run_verdicts(names, read)
    for step in summary.get("steps", []):  # a notebook the dry run did not finish: skipped, stopped or cut off
        notebook = step["what"].split(" ")[0]
        if step["step"] == "dryrun" and notebook not in verdicts:
            verdicts[notebook] = {"status": step["status"]}
    records = run_records(names, read)
    # a run name is filed at the top level only when every notebook of it in this session ran without a slice
    sliced = {run for (run, _), record in records.items() if record.get("attack_subset")}
    complete_runs = {run for (run, _) in records} - sliced
    bench = [json.loads(read(n)) for n in names if PurePosixPath(n).parts[0] == "bench" and n.endswith(".json")]

    record = {"session": stamp, "gpu": gpu, "torch": environment.get("torch"), "commit": summary.get("commit"),
              "started": summary["started"], "wall_seconds": summary.get("wall_seconds"),
              "budget_seconds": summary.get("budget_seconds"), "rehearsal": bool(summary.get("rehearsal")),
              "environment": environment, "steps": summary.get("steps", []), "dry_run": verdicts,
              "runs": {f"{run}/{notebook}": {"wall_seconds": r.get("wall_seconds"),
                                             "attack_subset": r.get("attack_subset")}
                       for (run, notebook), r in sorted(records.items())},
              "benchmark": [stage for b in bench for stage in b.get("results", [])],
              "archive": {k: summary.get(f"archive_{k}") for k in ("level", "bytes", "fits")}}
    file_outputs(repo, stamp, names, contents, complete_runs, bench, record, rehearsal_ok)
    raw = repo / ".cache" / "gpu_sessions" / stamp  # not under .device/, which travels to the GPU machine
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "results.tar.gz", "session.log"):
        if (folder / name).exists():
            shutil.copy2(folder / name, raw / name)
    write_index(repo / "tables" / "gpu_sessions")
    return record


def file_outputs(repo: Path, stamp: str, names, contents: dict, complete_runs, bench, record: dict,
                 rehearsal_ok: bool) -> None:
    """Write every output, the benchmark and the session record (with the list of what was filed) into a staging
    folder, then move them into ``repo``: everything was checked before, nothing is left half-written."""
    filed = []
    with tempfile.TemporaryDirectory(dir=repo) as staging:
        staging = Path(staging)
        for name in names:
            parts = PurePosixPath(name).parts
            if parts[0] != "run" or not (parts[1:2] in (("tables",), ("figures",)) or
                                         parts[1:3] == ("notebooks", "executed")):
                continue  # a run's outputs are tables, figures and executed notebooks; nothing else is filed
            for target in (f"tables/gpu_sessions/{stamp}/" + "/".join(parts[1:]),
                           destination(name, complete_runs, rehearsal_ok)):
                if target:
                    (staging / target).parent.mkdir(parents=True, exist_ok=True)
                    (staging / target).write_bytes(contents[name])
                    filed.append(target)
        if bench:
            target = f"tables/benchmarks/gpu_{stamp}.json"
            (staging / target).parent.mkdir(parents=True, exist_ok=True)
            (staging / target).write_text(json.dumps({"session": stamp, "stages": bench}, indent=1) + "\n")
            filed.append(target)
        record["filed"] = sorted(filed)
        target = f"tables/gpu_sessions/{stamp}.json"
        (staging / target).parent.mkdir(parents=True, exist_ok=True)
        (staging / target).write_text(json.dumps(record, indent=1) + "\n")
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            final = repo / path.relative_to(staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            path.replace(final)


def write_index(folder: Path) -> None:
    """``README.md``: one line per session record in ``folder``."""
    lines = ["# GPU sessions", "",
             "Made by `scripts/collect_gpu_session.py` from the records beside it (one JSON per session, written by",
             "`scripts/gpu_session.py` on the GPU machine). A step's status: ok, failed, timeout, skipped (no time",
             "left), stopped_at_budget (a clean stop; the run publishes nothing).", "",
             "| session | GPU | torch | commit | wall s | steps | dry run failed | benchmark (ours / DataLoader) |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        steps = ", ".join(f"{s['step']} {s['what'].split(' ')[0].rstrip(',')}: {s['status']} {s['seconds']:.0f}s"
                          for s in r.get("steps", []) if s["step"] != "setup")
        failed = ", ".join(n for n, v in r.get("dry_run", {}).items() if v["status"] == "failed") or (
            "none" if r.get("dry_run") else "not run")
        bench = ", ".join(f"{b['stage']} x{b['speedup']}" for b in r.get("benchmark", [])) or "-"
        lines.append(f"| {r['session']} | {r['gpu']} | {r.get('torch')} | {r.get('commit')} | "
                     f"{r.get('wall_seconds')} | {steps} | {failed} | {bench} |")
    (folder / "README.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="the folder holding summary.json and results.tar.gz")
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout to file into (default: this one)")
    ap.add_argument("--rehearsal", action="store_true", help="accept a CPU rehearsal's results (tests)")
    args = ap.parse_args(argv)
    for name in ("summary.json", "results.tar.gz"):
        if not (args.folder / name).is_file():
            print(f"error: {args.folder / name} is missing: pass the folder the GPU session's files came back in",
                  file=sys.stderr)
            return 2
    record = collect(args.folder, args.repo.resolve(), args.rehearsal)
    print(f"session {record['session']}: {record['gpu']}, torch {record['torch']}, {record['wall_seconds']} s")
    for step in record["steps"]:
        print(f"  {step['step']:6s} {step['what']}: {step['status']} ({step['seconds']} s)")
    for notebook, verdict in record["dry_run"].items():
        print(f"  dry run {notebook}: {verdict['status']}" + (f" - {verdict['error'].splitlines()[0]}"
                                                              if verdict["status"] == "failed" else ""))
    print(f"filed {len(record['filed'])} files; record tables/gpu_sessions/{record['session']}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
