"""The lease on an output root: writers whose concepts overlap never run at the same time, and a
crashed run's claim runs out.

One lease object per root (``_LEASE``) is a small JSON document listing its live **holders**.
Each holder records a unique owner token, who it is (host, pid, an optional label such as the
run id), when it started and when its claim expires, and **what it claims**:

* ``concepts: null`` - every concept of the run: a whole run (which finalizes), and anyone
  about to finalize (``Lease.claim_all``: a run of a subset that is the whole table, the fan-out
  parent before it consolidates). Excludes every other holder.
* ``concepts: [ids]`` - those concepts only: a run with ``--concept-ids`` and a fan-out shard.
  Two of these exclude each other only when their id sets intersect, so shards run side by side.
* ``kind: "coordinator"`` with no concepts - a fan-out parent while its shards run: it excludes
  whole runs and other coordinators (a second fan-out), not its shards.

:meth:`Storage.acquire_lease <normguide.data.storage.Storage.acquire_lease>` reads the document,
drops holders whose claim expired (or whose process on this host is gone), refuses with
:class:`LeaseHeld` (naming the root, the holder, its claim and expiry) when a live holder
conflicts, and otherwise writes the document back with itself added. Every change (take,
renew, upgrade, release) is such a read-check-write, made atomic by a **compare-and-swap on the
one object**: of two writers that read the same version, exactly one write lands and the other
reads again and decides again. So two claims are never both granted on any interleaving.

* Local: creation is ``os.link`` of a complete temporary file (fails if the name exists, like
  ``O_EXCL``); a replace or delete runs under ``flock`` on the lease's directory after checking
  the file still holds the bytes that were read. Assumes a filesystem with working ``flock``.
* S3: creation is a put with ``If-None-Match: *``; replace puts with ``If-Match: <etag read>``;
  release of the last holder deletes with ``If-Match``. AWS S3 has supported these since 2024
  (botocore >= 1.35.6x sends them); so do moto and MinIO. With an older botocore the fallback is
  a plain put read back after :data:`FALLBACK_SETTLE_S` (a race window, said here plainly).

A holder renews its claim every ``ttl_s / 3`` on a background thread. :meth:`Lease.check`,
called by the pipeline before each write of a concept's outputs and before finalizing, reads the
lease and raises :class:`LeaseLost` unless this holder is still listed and unexpired: a run that
was stopped (SIGSTOP, a long GC pause, a suspended VM) past its expiry and taken over stops
writing when it wakes, instead of writing on. A lease document that is not one (hand-edited:
``expires: NaN``, a pid out of range, a missing field) is refused with :class:`LeaseDamaged`
naming the object and the field; delete it if no run uses the root.

Expiry is judged by the clock of the process that reads the lease, against the wall-clock time
the holder wrote: hosts whose clocks disagree by more than a fraction of ``ttl_s`` should use a
longer ``ttl_s``. A check happens before a write, not atomically with it: a holder that is
stopped *between* its check and its write (a window of one image batch) can still land that one
write after a takeover; the next check stops it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from normguide.data import layout
from normguide.errors import InputError, RunFailure

if TYPE_CHECKING:
    from normguide.data.storage.base import Storage

__all__ = ["FALLBACK_SETTLE_S", "LEASE_NAME", "LEASE_TTL_S", "Lease", "LeaseDamaged", "LeaseHeld", "LeaseInfo",
           "LeaseLost", "acquire_lease", "check_held", "held_leases", "lease_state", "read_holders"]

#: Key of the lease object under the output root.
LEASE_NAME = layout.LEASE
#: Default claim lifetime: renewed every third of it, so a live run keeps it through two
#: failed renewals; a crashed run's claim is taken over at most this long after the crash.
LEASE_TTL_S = 120.0
#: Without conditional puts (old botocore): wait this long before reading the lease back.
FALLBACK_SETTLE_S = 1.0
#: How often a waiting acquire (``wait_s > 0``) looks again.
POLL_S = 2.0
#: The format tag of the lease document.
FORMAT = "normguide-lease/2"
#: Holder kinds: a writer (of ``concepts``, or of all when None), or a fan-out coordinator.
KINDS = ("run", "coordinator")
_MAX_PID = 2**31 - 1


def _iso(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return repr(t)


class LeaseDamaged(InputError):
    """The lease object is not a lease this version can read (hand-edited, or foreign): the
    message names the object and what is wrong with it."""

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        super().__init__(f"lease {uri} is damaged: {problem}; delete it if you are sure no run is using this "
                         "output root")


@dataclass(frozen=True)
class LeaseInfo:
    """One holder of the lease."""

    owner: str  # unique token of this holder (uuid4 hex)
    host: str
    pid: int
    started: float  # epoch seconds, when the holder first took it
    expires: float  # epoch seconds, holder's clock
    ttl_s: float
    label: str | None = None  # e.g. the run id
    concepts: tuple[str, ...] | None = None  # None: every concept of the run
    kind: str = "run"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["concepts"] = None if self.concepts is None else sorted(self.concepts)
        d["started_iso"], d["expires_iso"] = _iso(self.started), _iso(self.expires)
        return d

    def to_bytes(self) -> bytes:
        """This holder alone, as a lease document."""
        return _encode([self])

    @classmethod
    def from_dict(cls, d: Any, uri: str = "the lease") -> LeaseInfo:
        """A holder from its JSON object; :class:`LeaseDamaged` naming ``uri`` and the field
        when a field is missing or out of range."""
        if not isinstance(d, dict):
            raise LeaseDamaged(uri, f"a holder is {type(d).__name__}, not an object")

        def field(name: str, kind: type, *, optional: bool = False) -> Any:
            if name not in d or d[name] is None:
                if optional:
                    return None
                raise LeaseDamaged(uri, f"a holder has no {name!r}")
            v = d[name]
            if kind is float:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise LeaseDamaged(uri, f"{name!r} is {v!r}, not a finite number")
                return float(v)
            if kind is int:
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _MAX_PID:
                    raise LeaseDamaged(uri, f"{name!r} is {v!r}, not a process id (0 to {_MAX_PID})")
                return v
            if not isinstance(v, str) or not v or len(v) > 512:
                raise LeaseDamaged(uri, f"{name!r} is {v!r}, not a non-empty string")
            return v

        concepts = d.get("concepts")
        if concepts is not None:
            if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
                raise LeaseDamaged(uri, f"'concepts' is {concepts!r}, not null or a list of concept ids")
            concepts = tuple(concepts)
        kind = d.get("kind", "run")
        if kind not in KINDS:
            raise LeaseDamaged(uri, f"'kind' is {kind!r}, not one of {list(KINDS)}")
        ttl = field("ttl_s", float)
        if ttl <= 0:
            raise LeaseDamaged(uri, f"'ttl_s' is {ttl!r}, not positive")
        return cls(owner=field("owner", str), host=field("host", str), pid=field("pid", int),
                   started=field("started", float), expires=field("expires", float), ttl_s=ttl,
                   label=field("label", str, optional=True), concepts=concepts, kind=kind)

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseInfo | None:
        """The first holder of a lease document, or None if ``data`` is not a valid one."""
        try:
            holders = _decode(data, "the lease")
        except LeaseDamaged:
            return None
        return holders[0] if holders else None

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires

    def holder_gone(self) -> bool:
        """Whether the holder is known to have stopped: a process on this host that no longer
        exists (a run killed with SIGKILL or a crash), or a claim of this very process that no
        run in it holds any more (released while the storage was down). Its claim need not be
        waited out. A holder on another host, or one whose liveness cannot be told, is not gone."""
        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        if self.pid == os.getpid():
            return self.owner not in _HELD
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, owned by someone else
            return False
        return False

    def live(self, now: float) -> bool:
        return not self.expired(now) and not self.holder_gone()

    def claim(self) -> str:
        """What it claims, in words."""
        if self.kind == "coordinator":
            return "the fan-out of the run"
        if self.concepts is None:
            return "every concept of the run"
        shown = ", ".join(sorted(self.concepts)[:5]) + (", ..." if len(self.concepts) > 5 else "")
        return f"{len(self.concepts)} concept(s) ({shown})"

    def conflicts(self, other: LeaseInfo) -> bool:
        """Whether two claims exclude each other (see the module docstring)."""
        a, b = self, other
        if a.kind == "coordinator" or b.kind == "coordinator":
            # a fan-out parent excludes whole runs and other parents, not the subsets it launches
            return (a.kind == b.kind) or (a.concepts is None and a.kind == "run") or \
                (b.concepts is None and b.kind == "run")
        if a.concepts is None or b.concepts is None:
            return True
        return not set(a.concepts).isdisjoint(b.concepts)

    def holder(self) -> str:
        who = f"host {self.host} pid {self.pid}"
        return f"{who} ({self.label})" if self.label else who


def _encode(holders: list[LeaseInfo]) -> bytes:
    return json.dumps({"format": FORMAT, "holders": [h.to_dict() for h in holders]}, sort_keys=True).encode()


def _decode(data: bytes, uri: str) -> list[LeaseInfo]:
    """The holders of a lease document (a version-1 lease, one holder of the whole root, reads as
    one holder of every concept); :class:`LeaseDamaged` naming ``uri`` otherwise."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LeaseDamaged(uri, f"not JSON ({exc})") from None
    if isinstance(doc, dict) and "holders" in doc:
        if doc.get("format") != FORMAT:
            raise LeaseDamaged(uri, f"format {doc.get('format')!r} is not {FORMAT!r}")
        if not isinstance(doc["holders"], list):
            raise LeaseDamaged(uri, "'holders' is not a list")
        return [LeaseInfo.from_dict(h, uri) for h in doc["holders"]]
    if isinstance(doc, dict) and "owner" in doc:  # version 1: one holder of the whole root
        return [LeaseInfo.from_dict({**doc, "concepts": None, "kind": "run"}, uri)]
    raise LeaseDamaged(uri, "not a lease document (no 'holders')")


def read_holders(storage: Storage, name: str = LEASE_NAME) -> list[LeaseInfo]:
    """The holders listed in the lease ``name`` (expired ones included); [] when there is none.
    Raises :class:`LeaseDamaged` for a damaged lease."""
    found = storage._lease_read(name)
    return [] if found is None else _decode(found[0], storage.uri(name))


def lease_state(storage: Storage, name: str = LEASE_NAME) -> str | None:
    """'live' (a holder's claim is current), 'expired' (every holder's claim ran out, or its
    process on this host is gone), 'damaged', or None (no lease)."""
    try:
        holders = read_holders(storage, name)
    except LeaseDamaged:
        return "damaged"
    if not holders:
        return None
    now = time.time()
    return "live" if any(h.live(now) for h in holders) else "expired"


#: The leases this process holds now, by owner token (added at acquire, removed at release,
#: even when the storage could not write the release).
_HELD: dict[str, Lease] = {}
_HELD_LOCK = threading.Lock()


def held_leases(storage: Storage) -> list[Lease]:
    """The leases this process holds on ``storage``'s root."""
    with _HELD_LOCK:
        return [lease for lease in _HELD.values()
                if lease.storage.root == storage.root and type(lease.storage) is type(storage)]


def check_held(storage: Storage, *, finalizing: bool = False) -> None:
    """Before a write under ``storage``'s root: raise :class:`LeaseLost` if a lease this process
    holds there was lost (read from storage, not from memory). With ``finalizing``, a lease that
    claims less than every concept is upgraded first (:meth:`Lease.claim_all`, raising
    :class:`LeaseHeld` while another writer is live). A process that holds no lease on the root
    (a library user calling a step by itself) is not checked."""
    for lease in held_leases(storage):
        lease.check()
        if finalizing and not lease.claims_all:
            lease.claim_all()


class LeaseHeld(InputError):
    """Another live run holds a claim that overlaps this one. The message names the root, the
    holder (host, pid, label), its claim, when it started and when it expires."""

    def __init__(self, root: str, uri: str, info: LeaseInfo, *, waited_s: float = 0.0) -> None:
        self.root, self.uri, self.info = root, uri, info
        left = max(0.0, info.expires - time.time())
        waited = f" (waited {waited_s:.0f} s)" if waited_s > 0 else ""
        super().__init__(
            f"output root {root} is in use by another run{waited}: {info.holder()} holds its lease {uri} for "
            f"{info.claim()}, started {_iso(info.started)}, expires {_iso(info.expires)} (in {left:.0f} s) unless "
            "renewed. Wait for that run to finish; if it crashed, run again after the lease expires "
            f"(or delete {uri} if you are sure no run is using this root)"
        )


class LeaseLost(RunFailure):
    """A held claim was taken over or removed by someone else, or expired before it could be
    renewed: the run must stop writing."""


class _Refused(Exception):
    def __init__(self, info: LeaseInfo) -> None:
        self.info = info


def _transact(storage: Storage, key: str, change: Callable[[list[LeaseInfo]], list[LeaseInfo] | None]) -> Any:
    """Apply ``change`` (holders -> new holders, or None for no write) to the lease document by
    compare-and-swap, reading again whenever another writer changed it first. Returns the
    version written (or read, when nothing was written)."""
    uri = storage.uri(key)
    for spin in range(10_000):
        if spin >= 3:  # the lease keeps changing under us: do not spin hot
            time.sleep(min(0.5, 0.05 * spin))
        found = storage._lease_read(key)
        holders, version = ([], None) if found is None else (_decode(found[0], uri), found[1])
        new = change(holders)
        if new is None:
            return version
        if not new:
            if found is None or storage._lease_delete(key, version):
                return None
            continue
        data = _encode(new)
        ok, written = (storage._lease_create(key, data) if found is None
                       else storage._lease_replace(key, data, version))
        if ok:
            return written
    raise LeaseLost(f"lease {uri} kept changing: gave up after 10000 attempts")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# The lease
# ---------------------------------------------------------------------------------------------
class Lease:
    """A held claim. :meth:`renew` extends it by ``ttl_s``; :meth:`release` removes it (if it is
    still ours); a background thread (``acquire_lease(auto_renew=True)`` or :meth:`start_renewal`)
    renews it every ``ttl_s / 3``. Use as a context manager to release on exit. :meth:`check`
    reads the lease and raises :class:`LeaseLost` unless this claim is still held."""

    def __init__(self, storage: Storage, key: str, info: LeaseInfo, version: Any) -> None:
        self.storage, self.key, self.uri = storage, key, storage.uri(key)
        self.info = info
        self._version = version  # backend's handle of the document we wrote (etag / bytes)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False
        self.error: BaseException | None = None  # why the lease was lost, if it was

    def __repr__(self) -> str:
        return f"Lease({self.uri!r}, {self.info.holder()}, {self.info.claim()}, expires {_iso(self.info.expires)})"

    @property
    def ttl_s(self) -> float:
        return self.info.ttl_s

    @property
    def expires(self) -> float:
        return self.info.expires

    @property
    def claims_all(self) -> bool:
        return self.info.concepts is None and self.info.kind == "run"

    @property
    def lost(self) -> bool:
        return isinstance(self.error, LeaseLost)

    def _lose(self, why: str) -> LeaseLost:
        self.error = LeaseLost(f"lease {self.uri} is no longer ours ({why}); this run stopped writing to "
                               f"{self.storage.root}. Another run may be writing there now: rerun once it is done")
        return self.error

    def _mine(self, holders: list[LeaseInfo]) -> LeaseInfo | None:
        return next((h for h in holders if h.owner == self.info.owner), None)

    def _why_not_mine(self, holders: list[LeaseInfo]) -> str:
        others = [h for h in holders if h.conflicts(self.info)]
        return f"now held by {others[0].holder()}" if others else "its claim was removed"

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease (read now) still lists this claim and it
        has not expired by this process's clock. Cost: one read of the lease object."""
        if isinstance(self.error, LeaseLost):
            raise self.error
        if self._released:
            raise LeaseLost(f"lease {self.uri} was released")
        holders = read_holders(self.storage, self.key)
        mine = self._mine(holders)
        if mine is None:
            raise self._lose(self._why_not_mine(holders))
        if mine.expired():
            # not renewed in time (a stopped process): renew now, unless someone took it meanwhile
            self.renew()

    def renew(self) -> None:
        """Extend the claim to ``now + ttl_s``. Raises LeaseLost if it is no longer ours."""
        with self._lock:
            if self._released:
                raise LeaseLost(f"lease {self.uri} was released")
            if self.lost:
                raise self.error
            new = replace(self.info, expires=time.time() + self.info.ttl_s)
            why: list[str] = []

            def change(holders: list[LeaseInfo]) -> list[LeaseInfo] | None:
                mine = self._mine(holders)
                if mine is None or (mine.expired() and any(h.conflicts(mine) and h.live(time.time())
                                                           for h in holders if h is not mine)):
                    why.append(self._why_not_mine(holders))
                    return None
                return [new if h is mine else h for h in holders]

            version = _transact(self.storage, self.key, change)
            if why:
                raise self._lose(why[0])
            self.info, self._version = new, version

    def claim_all(self) -> None:
        """Upgrade this claim to every concept of the run (before finalizing). Raises
        :class:`LeaseHeld` naming a live holder of another claim, :class:`LeaseLost` if this
        claim is gone."""
        with self._lock:
            if self.lost:
                raise self.error
            new = replace(self.info, concepts=None, kind="run", expires=time.time() + self.info.ttl_s)
            state: dict[str, Any] = {}

            def change(holders: list[LeaseInfo]) -> list[LeaseInfo] | None:
                now = time.time()
                mine = self._mine(holders)
                if mine is None:
                    state["lost"] = self._why_not_mine(holders)
                    return None
                others = [h for h in holders if h is not mine and h.live(now)]
                if others:
                    state["held"] = others[0]
                    return None
                return [new]

            version = _transact(self.storage, self.key, change)
            if "lost" in state:
                raise self._lose(state["lost"])
            if "held" in state:
                raise LeaseHeld(self.storage.root, self.uri, state["held"])
            self.info, self._version = new, version

    def release_quietly(self) -> None:
        """:meth:`release` on the way out of a run: a failure (the storage is down, which may be
        why the run is ending) is logged, never raised over the run's own error; the claim then
        expires by itself."""
        try:
            self.release()
        except Exception as exc:  # noqa: BLE001 - see above
            import logging

            logging.getLogger("normguide").warning("could not release the lease %s (it expires by itself): %s",
                                                   self.uri, exc)

    def release(self) -> None:
        """Stop renewing and remove this claim if it is still ours (idempotent; never touches
        another holder's claim). The renewal thread is joined, so none is left at exit."""
        self._stop.set()
        with _HELD_LOCK:
            _HELD.pop(self.info.owner, None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.storage.retry_seconds + 5)
        with self._lock:
            if self._released:
                return
            self._released = True
            if self.lost:
                return
            owner = self.info.owner

            def change(holders: list[LeaseInfo]) -> list[LeaseInfo] | None:
                if not any(h.owner == owner for h in holders):
                    return None
                return [h for h in holders if h.owner != owner]

            _transact(self.storage, self.key, change)

    def start_renewal(self, interval_s: float | None = None) -> Lease:
        """Renew every ``interval_s`` (default ``ttl_s / 3``) on a daemon thread until released.
        A renewal that fails for a storage error is tried again at the next tick; once the
        claim has expired unrenewed, or another run holds it, :attr:`lost` is set and renewal
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


def acquire_lease(storage: Storage, name: str = LEASE_NAME, *, ttl_s: float = LEASE_TTL_S,
                  owner: str | None = None, wait_s: float = 0.0, auto_renew: bool = True,
                  concepts: Iterable[str] | None = None, coordinator: bool = False) -> Lease:
    """Take a claim in the lease ``name`` under ``storage``'s root (see the module docstring).

    Args:
        name: Key of the lease object.
        ttl_s: Lifetime; renewed every ``ttl_s / 3`` when ``auto_renew``.
        owner: A label shown to whoever finds the lease held (e.g. the run id).
        wait_s: While a live holder's claim conflicts, look again every few seconds for this
            long before giving up (0: give up at once).
        auto_renew: Start the background renewal thread.
        concepts: The concept ids this holder writes; None (default): every concept.
        coordinator: A fan-out parent while its shards run (no concepts of its own).

    Raises:
        LeaseHeld: a live holder's claim overlaps this one.
        LeaseDamaged: the lease object is not a valid lease (named, with the field).
        StorageError: the storage itself failed (past its retry budget).
    """
    from normguide.data.storage.uris import check_key

    check_key(name)
    if not (ttl_s > 0) or not math.isfinite(ttl_s):
        raise ValueError(f"lease ttl_s must be a positive number, got {ttl_s!r}")
    claim = None if concepts is None or coordinator else tuple(sorted(set(concepts)))
    token = uuid.uuid4().hex
    t0 = time.monotonic()
    started = time.time()
    while True:
        mine = LeaseInfo(owner=token, host=socket.gethostname(), pid=os.getpid(), started=started,
                         expires=time.time() + ttl_s, ttl_s=float(ttl_s), label=owner, concepts=claim,
                         kind="coordinator" if coordinator else "run")

        def change(holders: list[LeaseInfo]) -> list[LeaseInfo] | None:
            now = time.time()
            kept = [h for h in holders if h.owner != token and h.live(now)]
            for h in kept:
                if h.conflicts(mine):
                    raise _Refused(h)
            return kept + [mine]

        try:
            version = _transact(storage, name, change)
        except _Refused as refused:
            waited = time.monotonic() - t0
            if waited >= wait_s:
                raise LeaseHeld(storage.root, storage.uri(name), refused.info,
                                waited_s=waited if wait_s > 0 else 0.0) from None
            time.sleep(min(POLL_S, max(0.05, wait_s - waited)))
            continue
        lease = Lease(storage, name, mine, version)
        with _HELD_LOCK:
            _HELD[token] = lease
        return lease.start_renewal() if auto_renew else lease
