"""Progress lines of a long run: one when a stage starts and one when it ends (with its time), and one per epoch
with the time elapsed and an estimate of the time left.

The lines go to the file named by ``BACKDOOR_REPRO_PROGRESS`` (``run_all.sh`` sets it for each notebook and shows
the file as it grows), never into a notebook's outputs; without it nothing is written. Nothing here touches a
tensor: a loop reports an epoch after the epoch's own host sync (its loss read), so no sync is added. A fast loop
does not flood the log: an epoch line comes at most every :data:`EPOCH_LINE_EVERY_S` seconds per loop, and the
first and last epoch always.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections import deque
from typing import Callable

PROGRESS_ENV = "BACKDOOR_REPRO_PROGRESS"
EPOCH_LINE_EVERY_S = 5.0
_stages: list[str] = []  # the stages building now, innermost last (a stage may build its parents inside)
_unwritable: set[str] = set()  # progress files that could not be written


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 03 min``."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {seconds}")
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def time_left(elapsed: float, done: int, total: int) -> float | None:
    """Seconds for the ``total - done`` units left at the mean pace of the ``done`` finished in ``elapsed`` seconds;
    None before the first."""
    if not 0 <= done <= total:
        raise ValueError(f"done must be between 0 and total ({total}), got {done}")
    return None if done == 0 else elapsed / done * (total - done)


def epoch_line(label: str, epoch: int, total: int, elapsed: float, left: float | None) -> str:
    """``no_defense [grid3]: epoch 3/20, 12 s elapsed, about 1 min 08 s left``."""
    estimate = "time left not known yet" if left is None else f"about {format_duration(left)} left"
    return f"{label}: epoch {epoch}/{total}, {format_duration(elapsed)} elapsed, {estimate}"


def enabled() -> bool:
    return bool(os.environ.get(PROGRESS_ENV))


def emit(line: str) -> None:
    """Append ``line``, stamped with the time of day, to the progress file (if one is set). A file that cannot be
    written never stops a run: it warns once per file and is left alone."""
    path = os.environ.get(PROGRESS_ENV)
    if not path or path in _unwritable:
        return
    try:
        with open(path, "a") as f:
            f.write(f"   {time.strftime('%H:%M:%S')} {line}\n")
    except OSError as error:
        _unwritable.add(path)
        warnings.warn(f"no more progress lines: {PROGRESS_ENV}={path} cannot be written ({error})")


def current_stage(default: str = "training") -> str:
    """The label of the innermost stage building now, else ``default``."""
    return _stages[-1] if _stages else default


@contextlib.contextmanager
def stage(label: str, clock: Callable[[], float] = time.perf_counter):
    """A line when the stage ``label`` starts and one when it ends: done in, or stopped after (with the error)."""
    emit(f"{label}: started")
    _stages.append(label)
    started = clock()
    try:
        yield
    except BaseException as error:
        emit(f"{label}: stopped after {format_duration(clock() - started)} ({type(error).__name__})")
        raise
    else:
        emit(f"{label}: done in {format_duration(clock() - started)}")
    finally:
        _stages.pop()


def stage_label(stage) -> str:
    """A stage (:class:`~backdoor_repro.graph.Stage`) by its name, the attack it descends from and the training seed:
    ``no_defense [grid3, seed 1]``. The nearest stage upstream that names them wins."""
    attack = seed = None
    queue, seen = deque([stage]), set()
    while queue:
        node = queue.popleft()
        if id(node) in seen:
            continue
        seen.add(id(node))
        config = node.config if isinstance(node.config, dict) else {}
        poisoning = config.get("poisoning") if isinstance(config.get("poisoning"), dict) else config
        if attack is None and node.name in ("poisoned_data", "lc_images") and "attack" in poisoning:
            attack = poisoning["attack"] or "clean"
        if seed is None and node.name == "model_context" and "seed" in config:
            seed = config["seed"]
        queue.extend(node.parents)
    details = [d for d in (attack, None if seed is None else f"seed {seed}") if d]
    return f"{stage.name} [{', '.join(details)}]" if details else stage.name


class EpochProgress:
    """The epoch lines of one loop of ``total`` epochs. The estimate of the time left is this attempt's mean pace:
    a resumed loop (:meth:`resumed_at`) counts from the epoch it resumed at."""

    def __init__(self, total: int, every: float | None = None, clock: Callable[[], float] = time.perf_counter):
        self.total, self.clock = total, clock
        self.every = EPOCH_LINE_EVERY_S if every is None else every
        self.first, self.started, self.last_line = 0, clock(), None

    def resumed_at(self, epoch: int) -> None:
        self.first, self.started = epoch, self.clock()

    def after_epoch(self, epoch: int, elapsed: float, label: str | None = None) -> str | None:
        """Report ``epoch`` (1-based) when a line is due; ``elapsed``: the loop's time so far, earlier attempts
        included. Returns the line written (None: none was due, or no progress file is set)."""
        if not enabled():
            return None
        now = self.clock()
        due = epoch in (self.first + 1, self.total) or self.last_line is None or now - self.last_line >= self.every
        if not due:
            return None
        self.last_line = now
        done = min(max(epoch - self.first, 0), self.total - self.first)
        line = epoch_line(label or current_stage(), epoch, self.total, elapsed,
                          time_left(now - self.started, done, self.total - self.first))
        emit(line)
        return line
