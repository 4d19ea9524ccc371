"""Progress of long steps (inversion, generation), reported per concept and stage.

The pipeline's steps call :func:`stage`; what the user sees depends on the reporter installed
with :func:`set_reporter`: the CLI shows live bars with counts and rates on a terminal, and one
few lines per stage otherwise (logs, CI, a Prefect worker): started, every 10 s while it runs
(done/total, rate, ETA), finished. The default reporter logs those to the ``normguide`` logger.
:func:`announce` says what happens next (loading the model, resuming).

    with progress.stage("digit-two", "generation", total=16, unit="image") as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from collections.abc import Iterator
from typing import Protocol

log = logging.getLogger("normguide")


class Stage:
    """One running stage of one concept: ``advance(n)`` as work completes."""

    def __init__(self, concept_id: str, name: str, total: int, unit: str, reporter: Reporter):
        self.concept_id, self.name, self.total, self.unit = concept_id, name, total, unit
        self.done = 0
        self.started = time.perf_counter()
        self._reporter = reporter

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def rate(self) -> float | None:
        return self.done / self.elapsed if self.done and self.elapsed > 0 else None

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._reporter.advanced(self)

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None before the first unit is done)."""
        rate = self.rate
        return (self.total - self.done) / rate if rate else None

    def describe_running(self) -> str:
        """``digit-two: generation 4/16 images, 0.50 images/s, ETA 24 s (8.0 s so far)``."""
        parts = [f"{self.concept_id}: {self.name} {self.done}/{self.total} {self.unit}s"]
        if self.rate:
            parts.append(f"{self.rate:.2f} {self.unit}s/s")
            parts.append(f"ETA {format_seconds(self.eta)}")
        else:
            parts.append("first batch running")
        return ", ".join(parts) + f" ({format_seconds(self.elapsed)} so far)"

    def describe(self) -> str:
        rate = f", {self.rate:.2f} {self.unit}s/s" if self.rate else ""
        return f"{self.concept_id}: {self.name} {self.done}/{self.total} {self.unit}s in {self.elapsed:.1f} s{rate}"


def format_seconds(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Reporter(Protocol):
    def started(self, stage: Stage) -> None: ...
    def advanced(self, stage: Stage) -> None: ...
    def finished(self, stage: Stage, ok: bool) -> None: ...


class LogReporter:
    """Log lines while a stage runs (the default, and the CLI's when not on a terminal): one when it
    starts, one every ``interval`` seconds while it runs (done/total, rate, ETA), also between
    batches (a heartbeat thread per stage, in the stage's context, so a Prefect task's lines stay
    its own), and one when it ends. Quiet enough for a log file, often enough that a long CPU run
    never looks stuck."""

    def __init__(self, logger: logging.Logger = log, level: int = logging.INFO, interval: float = 10.0):
        self.logger, self.level, self.interval = logger, level, interval
        self._running: dict[int, tuple[list[float], threading.Event]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> LogReporter:  # a reporter is used as a context, like the CLI's live bars
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def note(self, text: str) -> None:
        self.logger.log(self.level, "%s", text)

    def started(self, stage: Stage) -> None:
        import contextvars

        self.logger.log(self.level, "%s: %s of %d %ss started", stage.concept_id, stage.name, stage.total, stage.unit)
        last, stop = [time.perf_counter()], threading.Event()
        with self._lock:
            self._running[id(stage)] = (last, stop)
        threading.Thread(target=contextvars.copy_context().run, args=(self._beat, stage, last, stop),
                         name="normguide-progress", daemon=True).start()

    def advanced(self, stage: Stage) -> None:
        with self._lock:
            entry = self._running.get(id(stage))
        if entry is not None and stage.done < stage.total and time.perf_counter() - entry[0][0] >= self.interval:
            entry[0][0] = time.perf_counter()
            self.logger.log(self.level, "%s", stage.describe_running())

    def finished(self, stage: Stage, ok: bool) -> None:
        with self._lock:
            entry = self._running.pop(id(stage), None)
        if entry is not None:
            entry[1].set()
        if ok:
            self.logger.log(self.level, "%s", stage.describe())

    def _beat(self, stage: Stage, last: list[float], stop: threading.Event) -> None:
        """While ``stage`` runs: a line whenever it has been silent for ``interval`` (a batch still running)."""
        while not stop.wait(min(1.0, self.interval)):
            if time.perf_counter() - last[0] >= self.interval:
                last[0] = time.perf_counter()
                self.logger.log(self.level, "%s", stage.describe_running())


_reporter: Reporter = LogReporter()
_lock = threading.Lock()


def set_reporter(reporter: Reporter | None) -> Reporter:
    """Install ``reporter`` (None: the default log reporter) for every thread; returns the old one."""
    global _reporter
    with _lock:
        old, _reporter = _reporter, reporter or LogReporter()
    return old


def get_reporter() -> Reporter:
    return _reporter


def announce(text: str) -> None:
    """Say what happens next ("loading the model demo", "resuming: 1 of 3 concepts complete"):
    the reporter's ``note`` (a line on the terminal, or a log line), else an INFO log line."""
    note = getattr(_reporter, "note", None)
    if callable(note):
        note(text)
    else:
        log.info("%s", text)


@contextmanager
def stage(concept_id: str, name: str, total: int, unit: str = "image") -> Iterator[Stage]:
    """Report one stage of one concept; the reporter hears of its end, failed or not."""
    reporter = _reporter
    s = Stage(concept_id, name, total, unit, reporter)
    reporter.started(s)
    ok = False
    try:
        yield s
        ok = True
    finally:
        reporter.finished(s, ok)


__all__ = ["LogReporter", "Reporter", "Stage", "announce", "format_seconds", "get_reporter", "set_reporter", "stage"]
