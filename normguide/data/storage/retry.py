"""How long storage calls keep trying, and the one loop that decides it.

A write (and every other :class:`~normguide.data.storage.Storage` call) that fails because the
endpoint is unreachable, drops the connection, times out, or answers 5xx/throttling is retried
with exponential backoff and jitter: delay ``RETRY_INITIAL_DELAY * 2**n`` capped at
``RETRY_MAX_DELAY``, until ``retry_seconds`` (default :data:`RETRY_SECONDS`) have passed; then
:class:`~normguide.data.storage.StorageError` names the endpoint and the key. botocore's and
s3fs's own retries are turned down to a single attempt on the filesystems made here (see
:mod:`normguide.data.storage.s3`), so this loop alone decides how long a run waits. Errors that
retrying cannot fix (missing bucket, rejected credentials, access denied) fail at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from normguide.data.storage.errors import classify, retryable

__all__ = ["INPUT_RETRY_SECONDS", "RETRY_INITIAL_DELAY", "RETRY_MAX_DELAY", "RETRY_SECONDS",
           "backoff_delays", "with_retry"]

T = TypeVar("T")

#: Total time a Storage call keeps retrying an unreachable / 5xx / throttling endpoint.
RETRY_SECONDS = 60.0
#: The same for input reads (:func:`read_bytes`, :func:`exists_uri`) and
#: :meth:`Storage.check_writable`: a wrong endpoint in the configuration should fail quickly.
INPUT_RETRY_SECONDS = 10.0
#: First backoff delay; doubles per attempt up to RETRY_MAX_DELAY (each multiplied by a
#: random factor in [0.5, 1] so that many workers do not retry in lockstep).
RETRY_INITIAL_DELAY = 0.2
RETRY_MAX_DELAY = 8.0


def backoff_delays(total_seconds: float) -> Iterator[float]:
    """Sleep lengths between attempts: exponential with jitter, ending once ``total_seconds``
    from now (the call, not the first ``next``: the first attempt's own time counts) would be
    exceeded."""
    return _delays(time.monotonic() + max(0.0, total_seconds))


def _delays(deadline: float) -> Iterator[float]:
    delay = RETRY_INITIAL_DELAY
    while True:
        pause = delay * random.uniform(0.5, 1.0)
        if time.monotonic() + pause > deadline:
            return
        yield pause
        delay = min(delay * 2.0, RETRY_MAX_DELAY)


def with_retry(call: Callable[[], T], *, budget: float, fail: Callable[[BaseException, str], BaseException]) -> T:
    """``call()``, retried with backoff on unreachable/5xx/throttling for ``budget`` seconds;
    a final failure is turned into ``fail(exc, kind)``."""
    delays = backoff_delays(budget)
    while True:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised as ours
            kind = classify(exc)
            if retryable(kind):
                pause = next(delays, None)
                if pause is not None:
                    time.sleep(pause)
                    continue
            raise fail(exc, kind) from exc
