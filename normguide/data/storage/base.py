"""The output side: one root (``/abs/dir`` or ``s3://bucket/prefix``) as a key-value store of bytes.

:class:`Storage` is the interface, with atomic single writes, batched concurrent writes,
listings, and a :meth:`Storage.check_writable` to run before any GPU work;
:meth:`Storage.open` picks the implementation for a root (:class:`~.local.LocalStorage` or
:class:`~.s3.S3Storage`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from normguide.data import layout
from normguide.data.storage.lease import LEASE_NAME, LEASE_TTL_S, Lease, acquire_lease
from normguide.data.storage.retry import RETRY_SECONDS
from normguide.data.storage.uris import check_key, check_output_root, is_s3

if TYPE_CHECKING:
    from normguide.config import StorageConfig

__all__ = ["WRITE_CHECK_NAME", "Storage", "as_bytes", "batched"]

T = TypeVar("T")

#: Name stem of the probe object that check_writable writes and removes.
WRITE_CHECK_NAME = layout.WRITE_CHECK


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """``items`` in lists of ``n`` (the last one shorter), consumed one list at a time."""
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def as_bytes(key: str, data: Any) -> bytes:
    """``data`` as bytes, or ValueError naming ``key`` if it is not bytes-like."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise ValueError(f"data for storage key {key!r} must be bytes, got {type(data).__name__}")


class Storage:
    """One output root (local dir or s3://bucket/prefix) as a key-value store of bytes.

    Make one with :meth:`open`; it picks :class:`LocalStorage` or :class:`S3Storage`. Keys are
    relative ``/``-separated paths checked by :func:`check_key`. Instances are cheap, safe to
    share between threads, and usable after ``os.fork`` (the child makes its own connections).
    """

    root: str
    retry_seconds: float

    @classmethod
    def open(cls, root: str, *, storage_config: StorageConfig | None = None,
             retry_seconds: float | None = None) -> Storage:
        """The storage for ``root``: a local path, ``file://`` URI or ``s3://bucket[/prefix]``.

        Args:
            root: Output root; nothing is created until the first write or check_writable().
            storage_config: S3 endpoint and credentials (ignored for local roots).
            retry_seconds: Total retry time for unreachable/5xx endpoints (default RETRY_SECONDS).
        """
        # Imported here: both subclass Storage.
        from normguide.data.storage.local import LocalStorage
        from normguide.data.storage.s3 import S3Storage

        check_output_root(root, field="output root")
        budget = RETRY_SECONDS if retry_seconds is None else float(retry_seconds)
        if is_s3(root):
            return S3Storage(root, storage_config=storage_config, retry_seconds=budget)
        return LocalStorage(root, retry_seconds=budget)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"

    def uri(self, key: str) -> str:
        """URI of ``key`` under the root."""
        check_key(key)
        return f"{self.root}/{key}" if self.root != "/" else f"/{key}"

    # Implemented by the subclasses.
    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def existing(self, keys: Iterable[str]) -> set[str]:
        """The subset of ``keys`` that exist, with one listing per parent prefix (not one
        request per key)."""
        by_parent: dict[str, set[str]] = {}
        for key in keys:
            check_key(key)
            parent, _, _ = key.rpartition("/")
            by_parent.setdefault(parent, set()).add(key)
        found: set[str] = set()
        for parent, wanted in by_parent.items():
            present = self._children(parent)
            found.update(k for k in wanted if k in present)
        return found

    def _children(self, parent: str) -> set[str]:
        """Keys of the objects directly under ``parent`` ('' for the root)."""
        return set(self._children_sizes(parent))

    def sizes(self, keys: Iterable[str]) -> dict[str, int]:
        """Size in bytes of each of ``keys`` that exists (absent keys are left out), with one
        listing per parent prefix, like :meth:`existing`."""
        by_parent: dict[str, set[str]] = {}
        for key in keys:
            check_key(key)
            parent, _, _ = key.rpartition("/")
            by_parent.setdefault(parent, set()).add(key)
        found: dict[str, int] = {}
        for parent, wanted in by_parent.items():
            present = self._children_sizes(parent)
            found.update({k: present[k] for k in wanted if k in present})
        return found

    def _children_sizes(self, parent: str) -> dict[str, int]:
        """Key -> size of the objects directly under ``parent`` ('' for the root)."""
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> str:
        raise NotImplementedError

    def write_many(self, items: Iterable[tuple[str, bytes]], *, batch_size: int = 64) -> list[str]:
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        raise NotImplementedError

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys``; absent ones are not an error. Used to discard a concept's outputs
        when its row in the concept table changed (``steps.discard_concept``), and a fan-out
        shard's earlier cost record before the shard runs again (``throughput.forget_shard_costs``)."""
        raise NotImplementedError

    def check_writable(self) -> None:
        raise NotImplementedError

    # -- the lease: one live run per root (normguide.data.storage.lease) ------------------------
    def acquire_lease(self, name: str = LEASE_NAME, *, ttl_s: float = LEASE_TTL_S, owner: str | None = None,
                      wait_s: float = 0.0, auto_renew: bool = True, concepts: Iterable[str] | None = None,
                      coordinator: bool = False) -> Lease:
        """Take the lease ``name`` under this root, renewed every ``ttl_s / 3`` on a background
        thread (``auto_renew``) until :meth:`Lease.release` (or the end of a ``with`` block).

        A lease whose holder stopped renewing it (a crashed run) is taken over once expired.
        ``owner`` labels the holder in messages (e.g. the run id); ``wait_s`` > 0 waits that
        long for a live holder to let go. ``concepts`` limits the claim to those concept ids
        (None: every concept); ``coordinator`` is a fan-out parent's claim while its shards run.

        Raises:
            LeaseHeld: (a ValueError) another live run's claim overlaps: the message names this
                root, the holder (host, pid, label), its claim, when it started and expires.
            LeaseDamaged: (a ValueError) the lease object is not a valid lease, named.
            StorageError: the storage failed past its retry budget.
        """
        return acquire_lease(self, name, ttl_s=ttl_s, owner=owner, wait_s=wait_s, auto_renew=auto_renew,
                             concepts=concepts, coordinator=coordinator)

    # Backend primitives of the lease; ``version`` is opaque to the caller (an ETag, or the bytes).
    def _lease_create(self, key: str, data: bytes) -> tuple[bool, Any]:
        """Create ``key`` with ``data`` only if it does not exist: (created, version)."""
        raise NotImplementedError

    def _lease_read(self, key: str) -> tuple[bytes, Any] | None:
        """(data, version) of ``key``, or None if it does not exist."""
        raise NotImplementedError

    def _lease_replace(self, key: str, data: bytes, version: Any) -> tuple[bool, Any]:
        """Replace ``key`` with ``data`` only if it is still at ``version``: (replaced, new version)."""
        raise NotImplementedError

    def _lease_delete(self, key: str, version: Any) -> bool:
        """Delete ``key`` only if it is still at ``version``."""
        raise NotImplementedError

    @staticmethod
    def _check_batch_size(batch_size: int) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
