"""Progress of long steps (inversion, generation), reported per concept and stage.

The pipeline's steps call :func:`stage`; what the user sees depends on the reporter installed
with :func:`set_reporter`: the CLI shows live bars with counts and rates on a terminal, and one
line per finished stage otherwise (logs, CI, a Prefect worker). The default reporter logs one
line per stage to the ``normguide`` logger, so a library user is not flooded either.

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

    def describe(self) -> str:
        rate = f", {self.rate:.2f} {self.unit}s/s" if self.rate else ""
        return f"{self.concept_id}: {self.name} {self.done}/{self.total} {self.unit}s in {self.elapsed:.1f} s{rate}"


class Reporter(Protocol):
    def started(self, stage: Stage) -> None: ...
    def advanced(self, stage: Stage) -> None: ...
    def finished(self, stage: Stage, ok: bool) -> None: ...


class LogReporter:
    """One log line per finished stage (the default, and the CLI's when not on a terminal)."""

    def __init__(self, logger: logging.Logger = log, level: int = logging.INFO):
        self.logger, self.level = logger, level

    def __enter__(self) -> LogReporter:  # a reporter is used as a context, like the CLI's live bars
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def started(self, stage: Stage) -> None:
        pass

    def advanced(self, stage: Stage) -> None:
        pass

    def finished(self, stage: Stage, ok: bool) -> None:
        if ok:
            self.logger.log(self.level, "%s", stage.describe())


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


__all__ = ["LogReporter", "Reporter", "Stage", "get_reporter", "set_reporter", "stage"]
