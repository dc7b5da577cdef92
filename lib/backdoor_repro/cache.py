"""Content-addressed artifacts.

An artifact is a stage of the stage graph (:class:`backdoor_repro.graph.Stage`): its key is the hash of its name,
its typed config, its code version and its parents' keys, so a changed parameter, a bumped version or a change
upstream gives a new artifact and an unchanged one is reused. Files are
written to a temporary name and renamed (atomic), their sha256 is recorded in a sidecar, and loads use
``weights_only=True``. A file whose checksum does not match is treated as absent and rebuilt. The stage key is
stored inside the saved payload too and checked on load, so a file swapped for another stage's (behind a recomputed
sidecar) is treated as absent as well; artifacts written before the key was stored load as before.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from .deadline import check_time_budget
from .paths import cache_dir
from .progress import stage as progress_stage, stage_label

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def _jsonable(obj: Any):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    raise TypeError(f"cannot key an artifact on {type(obj).__name__}: use plain values or dataclasses")


def artifact_key(stage: str, config: Any, version: int) -> str:
    payload = json.dumps({"stage": stage, "config": _jsonable(config), "version": version}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file unique to this process and rename it into place; no temp file is left
    behind on error, and two processes writing the same path never share a temp file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj: Any, path: Path) -> str:
    """``torch.save`` to a temporary file, record its sha256 beside it, rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sidecar = path.with_name(path.name + ".sha256")
    sidecar_tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        digest = file_sha256(tmp)
        sidecar_tmp.write_text(digest)
        os.replace(tmp, path)
        os.replace(sidecar_tmp, sidecar)
    finally:
        tmp.unlink(missing_ok=True)
        sidecar_tmp.unlink(missing_ok=True)
    return digest


def verified_load(path: Path, map_location="cpu"):
    """Load ``path`` if it exists and matches its recorded sha256; otherwise ``None``."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    if not path.exists() or not sidecar.exists():
        return None
    if file_sha256(path) != sidecar.read_text().strip():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # unreadable despite the checksum (e.g. written by an incompatible version)
        return None


STAGE_KEY_FIELD = "__stage_key__"  # the stage key inside a saved artifact (a dict gets the entry; anything else is
WRAPPED_FIELD = "__artifact__"  # wrapped in a dict under this entry)


def save_artifact(result: Any, path: Path, key: str) -> str:
    """:func:`atomic_save` of ``result`` with the stage ``key`` inside the payload (see :func:`load_artifact`)."""
    payload = {**result, STAGE_KEY_FIELD: key} if isinstance(result, dict) else {STAGE_KEY_FIELD: key,
                                                                                 WRAPPED_FIELD: result}
    return atomic_save(payload, path)


def load_artifact(path: Path, key: str, map_location="cpu"):
    """The artifact stored at ``path`` for the stage ``key``, or ``None`` when it is absent, corrupt or another stage's
    (a file swapped in behind a recomputed sidecar: the key inside the payload differs, with a warning). An artifact
    saved before the key was stored inside it loads as before."""
    found = verified_load(path, map_location)
    if not isinstance(found, dict) or STAGE_KEY_FIELD not in found:
        return found
    stored = found.pop(STAGE_KEY_FIELD)
    if stored != key:
        warnings.warn(f"{path} holds the artifact of another stage ({stored}, not {key}): ignored and rebuilt")
        return None
    return found.pop(WRAPPED_FIELD) if set(found) == {WRAPPED_FIELD} else found


@contextlib.contextmanager
def _build_lock(path: Path):
    """An exclusive ``flock`` on ``<artifact>.lock`` (POSIX; on a shared filesystem it needs working file locks,
    as NFS with lockd and Lustre/GPFS provide). Without ``fcntl`` (Windows) no lock is taken."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_dead_temp_files(folder: Path, stem: str = "*") -> list[Path]:
    """Remove the temporary files (``.<stem>.<...>.<pid>[.<random>].tmp``) in ``folder`` whose writing process is
    gone: what a SIGKILL in the middle of :func:`atomic_save` or :func:`atomic_write_text` leaves behind. Pass the
    ``stem`` of files the caller holds the lock of: on a cache shared between machines a pid says nothing about
    another machine's writers."""
    removed = []
    for tmp in Path(folder).glob(f".{stem}.*.tmp") if Path(folder).is_dir() else ():
        pid = _writer_pid(tmp.name)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _writer_pid(name: str) -> int | None:
    """The pid in ``.<name>.<pid>.tmp`` (atomic_save) or ``.<name>.<pid>.<8 hex>.tmp`` (atomic_write_text)."""
    parts = name.split(".")
    if len(parts) >= 5 and len(parts[-2]) == 8 and parts[-3].isdigit():
        return int(parts[-3])
    return int(parts[-2]) if len(parts) >= 4 and parts[-2].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class NotCached(LookupError):
    """Raised by a read-only cache (``build=False``) for an artifact it does not hold."""


STAGE_COUNTS = {"built": 0, "from_cache": 0}  # this process's stages, for the run record (report.write_run_record)
# ...and each of them once, by "<name>/<key>": "seconds", its own build time as recorded (summed over the attempts
# of a resumed build, less the stages built inside it; None where it was built before build times were kept),
# "built" (in this process) and "here", the seconds of it spent in this process. A stage taken from the cache brings
# the stages its build resolved (``INNER_STAGES_FIELD``): a run that needs it from an empty cache needs them too.
STAGE_LOG: dict[str, dict] = {}
BUILD_SECONDS_FIELD = "build_seconds"  # in an artifact's .json sidecar: its own build time
INNER_STAGES_FIELD = "inner_stages"  # ...and the stages resolved inside its build, with their build times
_BUILDS: list[dict] = []  # the builds in progress (innermost last): the seconds and the stages resolved inside each
_RESUMED_SECONDS: dict[str, float] = {}  # by checkpoint path: training seconds of the attempts a build resumed


def resumed_from(checkpoint, seconds: float) -> None:
    """A loop resumed the checkpoint at ``checkpoint`` (one it accepted: same config and inputs), whose earlier
    attempts trained ``seconds``; the build that owns the checkpoint adds them to its time (:func:`earlier_attempts`)."""
    _RESUMED_SECONDS[str(Path(checkpoint).resolve())] = float(seconds)


def earlier_attempts(checkpoint) -> float:
    """The seconds of the earlier attempts that the build writing ``checkpoint`` resumed (0: it started afresh, or
    ignored a checkpoint of another config), taken once."""
    return _RESUMED_SECONDS.pop(str(Path(checkpoint).resolve()), 0.0) if checkpoint is not None else 0.0


def _log_stage(name: str, key: str, seconds, here: float | None) -> None:
    """``here``: the seconds this process spent building it; ``None``: taken from the cache. A build in progress
    learns of every stage resolved inside it (for its sidecar)."""
    seconds = float(seconds) if isinstance(seconds, (int, float)) else None
    entry = STAGE_LOG.setdefault(f"{name}/{key}", {
        "stage": name, "key": key, "seconds": None if seconds is None else round(seconds, 1),
        "built": here is not None, "here": round(here or 0.0, 1)})
    for build in _BUILDS:
        build["inner"].setdefault(f"{name}/{key}", {"stage": name, "key": key, "seconds": entry["seconds"]})


def _sidecar(path: Path) -> dict:
    try:
        found = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _log_cached(stage, artifact, path: Path) -> None:
    """A stage taken from the cache, with its own build time (its sidecar's, else the ``seconds`` an older artifact
    stores, which includes the stages built inside it) and the stages its build resolved."""
    sidecar = _sidecar(path)
    seconds = sidecar.get(BUILD_SECONDS_FIELD)
    if seconds is None and isinstance(artifact, dict):
        seconds = artifact.get("seconds")
    _log_stage(stage.name, stage.key, seconds, None)
    inner = sidecar.get(INNER_STAGES_FIELD)
    for e in inner if isinstance(inner, list) else ():
        if isinstance(e, dict) and {"stage", "key"} <= set(e):
            _log_stage(e["stage"], e["key"], e.get("seconds"), None)


class ArtifactCache:
    """``build=False``: a read-only view that returns what is stored and raises :class:`NotCached` instead of
    building (the grid notebook reads the paper notebooks' runs this way, never training)."""

    def __init__(self, root: str | os.PathLike | None = None, build: bool = True):
        self.root = Path(root) if root is not None else cache_dir() / "artifacts"
        self.build = build

    def path(self, stage) -> Path:
        """Where ``stage`` (a :class:`~backdoor_repro.graph.Stage`) is stored: ``<root>/<name>/<key>.pt``."""
        return self.root / stage.name / f"{stage.key}.pt"

    def get_or_build(self, stage, build: Callable[[Path], Any], map_location="cpu"):
        """Return the cached artifact of ``stage``, or call ``build(partial_path)`` and store what it returns.

        ``partial_path`` is where the builder may keep resumable progress (e.g. training checkpoints);
        it is removed once the artifact is stored.
        """
        path = self.path(stage)
        found = load_artifact(path, stage.key, map_location)
        if found is not None:
            self._remove_partial(path)  # left by a kill between storing the artifact and cleaning up
            STAGE_COUNTS["from_cache"] += 1
            _log_cached(stage, found, path)
            return found
        if not self.build:
            raise NotCached(f"{stage.name} artifact {path.stem} is not in the cache (read-only: nothing is trained)")
        with _build_lock(path):  # two jobs sharing the cache never build the same artifact at once
            found = load_artifact(path, stage.key, map_location)  # built by another job while this one waited
            if found is not None:
                STAGE_COUNTS["from_cache"] += 1
                _log_cached(stage, found, path)
                return found
            STAGE_COUNTS["built"] += 1
            return self._build(stage, build, path)

    def _build(self, stage, build, path):
        check_time_budget(f"the start of {stage.name}")  # a sliced run never starts an artifact after its deadline
        remove_dead_temp_files(path.parent, path.stem)  # this artifact's, left by a kill mid-write (under its lock)
        partial = path.with_suffix(".partial.pt")
        started = time.perf_counter()
        frame = {"nested": 0.0, "inner": {}}
        _BUILDS.append(frame)
        try:
            with progress_stage(stage_label(stage)):  # a line when it starts and ends (progress.py)
                result = build(partial)
        finally:
            _BUILDS.pop()
        here = time.perf_counter() - started
        save_artifact(result, path, stage.key)  # first: nothing below may lose a finished build
        if _BUILDS:
            _BUILDS[-1]["nested"] += here
        nested = frame["nested"]
        recorded = result.get("seconds") if isinstance(result, dict) else None  # cached_stage's: resumes included
        if isinstance(recorded, (int, float)):
            own = max(0.0, recorded - nested)
        else:
            own = here - nested + earlier_attempts(partial)
        described = {**_jsonable(stage.describe()), BUILD_SECONDS_FIELD: round(own, 1),
                     INNER_STAGES_FIELD: list(frame["inner"].values())}
        atomic_write_text(path.with_suffix(".json"), json.dumps(described, indent=1, sort_keys=True))
        _log_stage(stage.name, stage.key, own, here - nested)
        self._remove_partial(path)
        return result

    @staticmethod
    def _remove_partial(path: Path) -> None:
        partial = path.with_suffix(".partial.pt")
        for leftover in (partial, partial.with_name(partial.name + ".sha256")):
            if leftover.exists():
                leftover.unlink(missing_ok=True)
