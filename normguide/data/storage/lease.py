"""A lease on an output root: one live run at a time, and a crashed run's claim runs out.

A lease is a small JSON object (default key ``_LEASE`` under the root) holding a unique owner
token, the holder (host, pid, an optional label such as the run id), when it started and when
it expires. :meth:`Storage.acquire_lease <normguide.data.storage.Storage.acquire_lease>` takes
it, or raises :class:`LeaseHeld` naming the root, the holder and the expiry; a lease whose
expiry has passed (its run crashed, or stopped renewing) is taken over. A held lease is renewed
by a background thread every ``ttl_s / 3`` seconds while the run lives, and released (deleted)
at the end; used as a context manager it is released on the way out.

How each backend makes "take it only if nobody holds it" atomic:

* Local: the lease is created with ``os.link`` of a complete temporary file (fails if the name
  exists, like ``O_EXCL``, and never leaves a half-written lease); a takeover, renewal or
  release rewrites or deletes an existing lease only under ``flock`` on its directory, after
  checking that the file still holds the bytes it read. Assumes a filesystem with working
  ``flock`` (local disks; NFS only where locks are supported).
* S3: conditional requests. Creation is a put with ``If-None-Match: *``; takeover and renewal
  put with ``If-Match: <etag read>``; release deletes with ``If-Match``. Of two racing runs
  exactly one put succeeds (the other gets 412 Precondition Failed). AWS S3 has supported
  these since 2024 (botocore >= 1.35.6x sends them); so do moto and MinIO. With an older
  botocore that does not know the parameters, the fallback is a plain put followed by reading
  the lease back after :data:`FALLBACK_SETTLE_S` and checking the owner token: two runs
  starting within that window can then both believe they hold it (a race window, said here
  plainly; upgrade botocore to close it).

A retried request whose first attempt did reach the server (a timeout after the write) is
recognised by the owner token: reading back our own token counts as success.

Expiry is judged by the clock of the process that reads the lease, against the wall-clock time
the holder wrote: hosts whose clocks disagree by more than a fraction of ``ttl_s`` should use a
longer ``ttl_s``.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from normguide.errors import InputError, RunFailure

if TYPE_CHECKING:
    from normguide.data.storage.base import Storage

__all__ = ["FALLBACK_SETTLE_S", "LEASE_NAME", "LEASE_TTL_S", "Lease", "LeaseHeld", "LeaseInfo", "LeaseLost",
           "acquire_lease"]

#: Default key of the lease object under the output root.
LEASE_NAME = "_LEASE"
#: Default lease lifetime: renewed every third of it, so a live run keeps it through two
#: failed renewals; a crashed run's lease is taken over at most this long after the crash.
LEASE_TTL_S = 120.0
#: Without conditional puts (old botocore): wait this long before reading the lease back.
FALLBACK_SETTLE_S = 1.0
#: How often a waiting acquire (``wait_s > 0``) looks again.
POLL_S = 2.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease object holds."""

    owner: str  # unique token of this holder (uuid4 hex)
    host: str
    pid: int
    started: float  # epoch seconds, when the holder first took it
    expires: float  # epoch seconds, holder's clock
    ttl_s: float
    label: str | None = None  # e.g. the run id

    def to_bytes(self) -> bytes:
        d = asdict(self)
        d["started_iso"], d["expires_iso"] = _iso(self.started), _iso(self.expires)
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseInfo | None:
        """The lease, or None if ``data`` is not one (an unreadable lease is treated as expired)."""
        try:
            d = json.loads(data)
            return cls(owner=str(d["owner"]), host=str(d["host"]), pid=int(d["pid"]), started=float(d["started"]),
                       expires=float(d["expires"]), ttl_s=float(d["ttl_s"]), label=d.get("label"))
        except Exception:  # noqa: BLE001 - damaged or foreign content
            return None

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires

    def holder_gone(self) -> bool:
        """Whether the holder is known to have stopped: a process on this host that no longer
        exists (a run killed with SIGKILL or a crash), or a lease of this very process that no
        run in it holds any more (released while the storage was down). Its lease need not be
        waited out. A holder on another host, or one whose liveness cannot be told, is not gone."""
        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        if self.pid == os.getpid():
            return self.owner not in _HELD_HERE
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, owned by someone else
            return False
        return False

    def holder(self) -> str:
        who = f"host {self.host} pid {self.pid}"
        return f"{who} ({self.label})" if self.label else who


#: Owner tokens of the leases this process holds now (added at acquire, removed at release,
#: even when the storage could not delete the lease object).
_HELD_HERE: set[str] = set()


class LeaseHeld(InputError):
    """Another live run holds the output root's lease. The message names the root, the holder
    (host, pid, label), when it started and when the lease expires."""

    def __init__(self, root: str, uri: str, info: LeaseInfo, *, waited_s: float = 0.0) -> None:
        self.root, self.uri, self.info = root, uri, info
        left = max(0.0, info.expires - time.time())
        waited = f" (waited {waited_s:.0f} s)" if waited_s > 0 else ""
        super().__init__(
            f"output root {root} is in use by another run{waited}: {info.holder()} holds its lease {uri}, "
            f"started {_iso(info.started)}, expires {_iso(info.expires)} (in {left:.0f} s) unless renewed. "
            "Wait for that run to finish; if it crashed, run again after the lease expires "
            f"(or delete {uri} if you are sure no run is using this root)"
        )


class LeaseLost(RunFailure):
    """A held lease was taken over or removed by someone else, or could not be renewed before
    it expired: the run must stop writing."""


# ---------------------------------------------------------------------------------------------
# The lease
# ---------------------------------------------------------------------------------------------
class Lease:
    """A held lease. :meth:`renew` extends it by ``ttl_s``; :meth:`release` deletes it (if it is
    still ours); a background thread (started by ``acquire_lease(auto_renew=True)`` or
    :meth:`start_renewal`) renews it every ``ttl_s / 3``. Use as a context manager to release
    on exit. :attr:`lost` / :meth:`check` tell the holder whether it still holds it."""

    def __init__(self, storage: Storage, key: str, info: LeaseInfo, version: Any) -> None:
        self.storage, self.key, self.uri = storage, key, storage.uri(key)
        self.info = info
        self._version = version  # backend's handle of the object we wrote (etag / bytes)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False
        self.error: BaseException | None = None  # why the lease was lost, if it was

    def __repr__(self) -> str:
        return f"Lease({self.uri!r}, {self.info.holder()}, expires {_iso(self.info.expires)})"

    @property
    def ttl_s(self) -> float:
        return self.info.ttl_s

    @property
    def expires(self) -> float:
        return self.info.expires

    @property
    def lost(self) -> bool:
        return isinstance(self.error, LeaseLost)

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the lease was lost (taken over, removed, or expired
        while renewals failed)."""
        if isinstance(self.error, LeaseLost):
            raise self.error

    def renew(self) -> None:
        """Extend the lease to ``now + ttl_s``. Raises LeaseLost if it is no longer ours."""
        with self._lock:
            if self._released:
                raise LeaseLost(f"lease {self.uri} was released")
            new = LeaseInfo(**{**asdict(self.info), "expires": time.time() + self.info.ttl_s})
            ok, version = self.storage._lease_replace(self.key, new.to_bytes(), self._version)
            if not ok:
                version = _ours_after_all(self.storage, self.key, new)
                if version is None:
                    current = _read(self.storage, self.key)[0]
                    whom = f"now held by {current.holder()}" if current else "it is gone"
                    self.error = LeaseLost(f"lease {self.uri} is no longer ours ({whom}); stop writing to "
                                           f"{self.storage.root}")
                    raise self.error
            self.info, self._version = new, version

    def release_quietly(self) -> None:
        """:meth:`release` on the way out of a run: a failure (the storage is down, which may be
        why the run is ending) is logged, never raised over the run's own error; the lease then
        expires by itself."""
        try:
            self.release()
        except Exception as exc:  # noqa: BLE001 - see above
            import logging

            logging.getLogger("normguide").warning("could not release the lease %s (it expires by itself): %s",
                                                   self.storage.uri(self.key), exc)

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours (idempotent; never raises for
        a lease that is already gone or taken over)."""
        self._stop.set()
        _HELD_HERE.discard(self.info.owner)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.storage.retry_seconds + 5)
        with self._lock:
            if self._released:
                return
            self._released = True
            if not self.lost:
                self.storage._lease_delete(self.key, self._version)

    def start_renewal(self, interval_s: float | None = None) -> Lease:
        """Renew every ``interval_s`` (default ``ttl_s / 3``) on a daemon thread until released.
        A renewal that fails for a storage error is tried again at the next tick; once the
        lease has expired unrenewed, or another run holds it, :attr:`lost` is set and renewal
        stops."""
        if self._thread is not None:
            return self
        interval = self.info.ttl_s / 3 if interval_s is None else interval_s

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew()
                    self.error = None
                except LeaseLost:
                    return
                except Exception as exc:  # noqa: BLE001 - storage trouble: try again next tick
                    if self._released:
                        return
                    if self.info.expired():
                        self.error = LeaseLost(f"lease {self.uri} expired: renewing failed ({exc})")
                        return
                    self.error = exc

        self._thread = threading.Thread(target=loop, name=f"normguide-lease-{self.key}", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # leaving on an error: release quietly, so the run's own error is what the user sees
        self.release() if exc_type is None else self.release_quietly()


def _read(storage: Storage, key: str) -> tuple[LeaseInfo | None, Any, bool]:
    """(lease, version, exists)."""
    found = storage._lease_read(key)
    if found is None:
        return None, None, False
    data, version = found
    return LeaseInfo.from_bytes(data), version, True


def _ours_after_all(storage: Storage, key: str, mine: LeaseInfo) -> Any:
    """After a conditional write was refused: the version if the lease holds exactly ``mine``
    (an earlier attempt of the same write did land), else None."""
    info, version, _ = _read(storage, key)
    return version if info is not None and info == mine else None


def acquire_lease(storage: Storage, name: str = LEASE_NAME, *, ttl_s: float = LEASE_TTL_S,
                  owner: str | None = None, wait_s: float = 0.0, auto_renew: bool = True) -> Lease:
    """Take the lease ``name`` under ``storage``'s root (see the module docstring).

    Args:
        name: Key of the lease object.
        ttl_s: Lifetime; renewed every ``ttl_s / 3`` when ``auto_renew``.
        owner: A label shown to whoever finds the lease held (e.g. the run id).
        wait_s: While another live run holds it, look again every few seconds for this long
            before giving up (0: give up at once).
        auto_renew: Start the background renewal thread.

    Raises:
        LeaseHeld: another run holds a lease that has not expired.
        StorageError: the storage itself failed (past its retry budget).
    """
    from normguide.data.storage.uris import check_key

    check_key(name)
    if not (ttl_s > 0):
        raise ValueError(f"lease ttl_s must be positive, got {ttl_s!r}")
    token = uuid.uuid4().hex
    t0 = time.monotonic()
    started = time.time()
    for spin in itertools.count():
        if spin >= 3:  # the lease keeps changing under us: do not spin hot
            time.sleep(min(0.5, 0.05 * spin))
        now = time.time()
        mine = LeaseInfo(owner=token, host=socket.gethostname(), pid=os.getpid(), started=started,
                         expires=now + ttl_s, ttl_s=float(ttl_s), label=owner)
        ok, version = storage._lease_create(name, mine.to_bytes())
        if not ok:
            info, cur_version, exists = _read(storage, name)
            if not exists:
                continue  # released between our create and our read: try again
            if info == mine:  # our own create landed, its answer was lost (a retried request)
                ok, version = True, cur_version
            elif info is None or info.expired(now) or info.holder_gone():  # a crashed run's: take over
                ok, version = storage._lease_replace(name, mine.to_bytes(), cur_version)
                if not ok:
                    version = _ours_after_all(storage, name, mine)
                    ok = version is not None
                if not ok:
                    continue  # someone else changed it first: look again
            else:
                waited = time.monotonic() - t0
                if waited >= wait_s:
                    raise LeaseHeld(storage.root, storage.uri(name), info, waited_s=waited if wait_s > 0 else 0.0)
                time.sleep(min(POLL_S, max(0.05, wait_s - waited)))
                continue
        lease = Lease(storage, name, mine, version)
        _HELD_HERE.add(mine.owner)
        return lease.start_renewal() if auto_renew else lease
    raise AssertionError("unreachable")  # pragma: no cover
