"""S3 through s3fs: the filesystems this package makes, the two requests it sends itself, and
:class:`S3Storage`.

Fork and thread safety. s3fs runs its requests on one event loop in a background thread and
caches filesystem instances; neither survives ``os.fork`` (the loop thread is not copied, and
``AsyncFileSystem.loop`` raises "This class is not fork-safe" in a child). fsspec resets its
loop in a fork child (``os.register_at_fork``) but an instance made in the parent stays
broken, so filesystems here are made with ``skip_instance_cache=True`` and kept in a cache
keyed by process id: a :class:`~normguide.data.storage.Storage` (or module function) used after
a fork makes a fresh one in the child. The parent's instances are kept referenced in the child,
never closed there, because closing them would touch the parent's event loop and sockets. The
sync s3fs calls are safe from many threads (they are handed to the one loop thread).

One attempt per request. Each filesystem is made with botocore's retries and s3fs's own retry
wrapper turned down to a single attempt: the loop in :mod:`normguide.data.storage.retry` owns
backoff and the time budget.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from normguide.data.storage.base import WRITE_CHECK_NAME, Storage, as_bytes, batched
from normguide.data.storage.errors import StorageError, classify, client_error, describe, retryable
from normguide.data.storage.options import endpoint_of, secret_values, storage_options_for
from normguide.data.storage.retry import INPUT_RETRY_SECONDS, RETRY_SECONDS, backoff_delays, with_retry
from normguide.data.storage.uris import check_key, split_s3

if TYPE_CHECKING:
    from normguide.config import StorageConfig

__all__ = ["MAX_POOL_CONNECTIONS", "S3Storage", "get_object", "refine_forbidden", "s3_filesystem"]

#: Connections per S3 filesystem; bounds the concurrency of write_many's batches.
MAX_POOL_CONNECTIONS = 64


# ---------------------------------------------------------------------------------------------
# S3 filesystems: one per (process, options), never shared across a fork
# ---------------------------------------------------------------------------------------------
_FS_LOCK = threading.Lock()
_FS_CACHE: dict[tuple[int, str], Any] = {}


def _reset_lock_after_fork() -> None:
    # Another thread may have held the lock at the fork; the child has only the forking thread.
    global _FS_LOCK
    _FS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_after_fork)


def s3_filesystem(options: dict[str, Any]) -> Any:
    """An ``s3fs.S3FileSystem`` for ``options`` owned by this process (see module docstring)."""
    import s3fs
    from fsspec.utils import tokenize

    cache_key = (os.getpid(), tokenize(options))
    fs = _FS_CACHE.get(cache_key)
    if fs is not None:
        return fs
    with _FS_LOCK:
        fs = _FS_CACHE.get(cache_key)
        if fs is None:
            kwargs = dict(options)
            # One attempt per botocore call; the retry loop in .retry owns backoff.
            config_kwargs = {"retries": {"max_attempts": 1, "mode": "standard"},
                             "max_pool_connections": MAX_POOL_CONNECTIONS}
            config_kwargs.update(kwargs.pop("config_kwargs", None) or {})
            kwargs["config_kwargs"] = config_kwargs
            kwargs.setdefault("use_listings_cache", False)
            fs = s3fs.S3FileSystem(skip_instance_cache=True, **kwargs)
            # s3fs's own _error_wrapper retries 5 times (~2 s); one try here, see above.
            fs.retries = 1
            _FS_CACHE[cache_key] = fs
    return fs


# ---------------------------------------------------------------------------------------------
# The requests sent here rather than through s3fs's file-level calls
# ---------------------------------------------------------------------------------------------
def get_object(fs: Any, bucket: str, key: str) -> bytes:
    """The object's bytes from ONE GET with no request before it, so that an error is the
    GET's own, whose body carries an S3 error code (a wrong key told from a wrong secret).

    Public calls only: s3fs's ``call_s3`` sends the request and returns the response with its
    body unread; the body is then read (and closed) on the filesystem's loop with
    ``fsspec.asyn.sync``. ``fs.cat_file`` would not do: from s3fs 2026.3 on it sends a HEAD
    first (to decide on a ranged concurrent read) unless given ``max_concurrency=1``, a keyword
    that s3fs before 2026.3 does not accept, and a HEAD's 403/404 has no body.
    """
    from fsspec.asyn import sync

    resp = fs.call_s3("get_object", Bucket=bucket, Key=key)
    return sync(fs.loop, _read_and_close, resp["Body"])


async def _read_and_close(body: Any) -> bytes:
    try:
        return await body.read()
    finally:
        body.close()


async def _put_objects(fs: Any, items: list[tuple[str, bytes]]) -> list[Any]:
    """Put all ``items`` (``bucket/key``, bytes) concurrently on the filesystem's loop; each
    object's result or exception is returned in order, nothing is raised.

    The one private s3fs call of this package, ``fs._pipe_file`` (the coroutine behind the
    public ``pipe_file``; fsspec documents its ``_``-prefixed coroutines as the async API, "not
    to be called directly in normal code"). It is needed for one guarantee: per-object results of
    a concurrent batch, so that write_many puts again only the objects that failed and names the
    first failed key. No public call gives it: ``fs.pipe({path: data, ...})`` (fsspec's ``_pipe``
    runs ``_run_coros_in_chunks`` without ``return_exceptions``) raises the first failure once
    the batch has settled and does not say which objects were written, and ``fs.pipe_file`` per
    object would hold one blocked thread per request in flight (64 per batch).
    Checked against s3fs 2024.3.0 (the lowest version pyproject.toml allows) to 2026.4.0 in
    the s3fs repository and 2026.9.0 installed: ``_pipe_file(path, data, chunksize=50 MiB, ...)``
    sends one put_object below 100 MiB and a multipart upload (visible only once complete) above.
    """
    return await asyncio.gather(*(fs._pipe_file(path, data) for path, data in items), return_exceptions=True)


def refine_forbidden(fs: Any, bucket: str, exc: BaseException, kind: str) -> tuple[BaseException, str]:
    """A HEAD answered 403 carries no error code: ask again with a request whose error has a
    body (a one-key listing) to tell rejected credentials from missing permissions."""
    code, _ = client_error(exc)
    if kind != "denied" or code not in ("403", "Forbidden", None):
        return exc, kind
    try:
        fs.call_s3("list_objects_v2", Bucket=bucket, MaxKeys=1)
    except Exception as probe_exc:  # noqa: BLE001 - only used to explain the first error
        probe_kind = classify(probe_exc)
        if probe_kind in ("credentials", "no_bucket"):
            return probe_exc, probe_kind
    return exc, kind


# ---------------------------------------------------------------------------------------------
# An output root on S3
# ---------------------------------------------------------------------------------------------
class S3Storage(Storage):
    """``s3://bucket/prefix`` through s3fs. A single put is atomic on S3 (so is a multipart
    upload, visible only once completed); write_many sends each batch as concurrent puts on
    s3fs's event loop and retries the failed objects with backoff."""

    def __init__(self, root: str, *, storage_config: StorageConfig | None = None,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        bucket, prefix = split_s3(root)
        if not bucket:
            raise ValueError(f"output root {root!r} names no bucket; expected s3://bucket/prefix")
        if prefix:
            check_key(prefix)
        self.bucket, self.prefix = bucket, prefix
        self.root = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.retry_seconds = retry_seconds
        self._options = storage_options_for(self.root, storage_config)
        self.endpoint = endpoint_of(self._options)
        self._secrets = secret_values(self._options)

    # The filesystem is looked up per call: after a fork the child gets its own (see module doc).
    @property
    def fs(self) -> Any:
        return s3_filesystem(self._options)

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{self._object_key(check_key(key))}"

    def _path_root(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def _fail(self, uri: str) -> Callable[[BaseException, str], BaseException]:
        def fail(exc: BaseException, kind: str) -> BaseException:
            exc, kind = refine_forbidden(self.fs, self.bucket, exc, kind)
            if kind == "no_key":
                return FileNotFoundError(errno.ENOENT, f"object not found: {uri} (S3 endpoint {self.endpoint})", uri)
            msg = describe(exc, kind, uri=uri, bucket=self.bucket, endpoint=self.endpoint, secrets=self._secrets)
            if retryable(kind):
                msg += f" (gave up after retrying for {self.retry_seconds:g} s)"
            return StorageError(msg)

        return fail

    def exists(self, key: str) -> bool:
        path = self._path(key)
        bucket, okey = path.split("/", 1)
        try:
            with_retry(lambda: self.fs.call_s3("head_object", Bucket=bucket, Key=okey),
                       budget=self.retry_seconds, fail=self._fail(self.uri(key)))
        except FileNotFoundError:
            return False
        return True

    def _children(self, parent: str) -> set[str]:
        directory = f"{self.bucket}/{self._object_key(parent)}" if parent else self._path_root()
        try:
            entries = with_retry(lambda: self.fs.ls(directory, detail=True, refresh=True),
                                 budget=self.retry_seconds, fail=self._fail(f"s3://{directory}"))
        except FileNotFoundError:
            return set()
        base = self._path_root() + "/"
        return {e["name"][len(base):] for e in entries if e.get("type") == "file" and e["name"].startswith(base)}

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        bucket, okey = path.split("/", 1)
        return with_retry(lambda: get_object(self.fs, bucket, okey), budget=self.retry_seconds,
                          fail=self._fail(self.uri(key)))

    def write_bytes(self, key: str, data: bytes) -> str:
        self.write_many([(key, data)], batch_size=1)
        return self.uri(key)

    def write_many(self, items: Iterable[tuple[str, bytes]], *, batch_size: int = 64) -> list[str]:
        """Put many objects, ``batch_size`` concurrent puts at a time.

        The iterable is consumed one batch at a time (memory holds one batch). Objects of a
        batch that fail with a retryable error are put again with exponential backoff; the
        batch's budget is ``retry_seconds``. A StorageError names the endpoint and the first
        failed key; the objects written before it are complete, the failed ones absent (or,
        if they existed, unchanged).
        """
        self._check_batch_size(batch_size)
        uris: list[str] = []
        for batch in batched(items, batch_size):
            checked = [(check_key(k), as_bytes(k, d)) for k, d in batch]
            self._put_batch(dict(checked))
            uris.extend(self.uri(k) for k, _ in checked)
        return uris

    def _put_batch(self, pending: dict[str, bytes]) -> None:
        from fsspec.asyn import sync

        delays = backoff_delays(self.retry_seconds)
        while pending:
            fs = self.fs
            keys = list(pending)
            results = sync(fs.loop, _put_objects, fs, [(self._path(k), pending[k]) for k in keys])
            failed = {k: r for k, r in zip(keys, results) if isinstance(r, BaseException)}
            if not failed:
                return
            kinds = {k: classify(e) for k, e in failed.items()}
            fatal = [k for k in keys if k in kinds and not retryable(kinds[k])]
            if not fatal:
                pause = next(delays, None)
                if pause is not None:
                    time.sleep(pause)
                    pending = {k: pending[k] for k in keys if k in failed}
                    continue
            first = fatal[0] if fatal else next(iter(failed))
            msg = describe(failed[first], kinds[first], uri=self.uri(first), bucket=self.bucket,
                           endpoint=self.endpoint, secrets=self._secrets)
            if not fatal:
                msg += f" (gave up after retrying for {self.retry_seconds:g} s)"
            if len(failed) > 1:
                msg += f"; {len(failed) - 1} more object(s) of this batch not written"
            raise StorageError(f"writing failed: {msg}") from failed[first]

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (directory-like: 'images/c1' lists 'images/c1/...'), sorted."""
        check_key(prefix, allow_empty=True, allow_trailing_slash=True)
        prefix = prefix.rstrip("/")
        top = f"{self.bucket}/{self._object_key(prefix)}" if prefix else self._path_root()
        try:
            found = with_retry(lambda: self.fs.find(top + "/"), budget=self.retry_seconds,
                               fail=self._fail(f"s3://{top}/"))
        except FileNotFoundError:
            return []
        base = self._path_root() + "/"
        return sorted(p[len(base):] for p in found if p.startswith(base))

    def check_writable(self) -> None:
        """List the prefix, then put and delete a probe object under it. ValueError naming the
        endpoint and the bucket if the bucket is missing, the endpoint unreachable, the
        credentials rejected or writing denied."""
        budget = min(self.retry_seconds, INPUT_RETRY_SECONDS)

        def fail(exc: BaseException, kind: str) -> BaseException:
            what = {"no_bucket": "bucket does not exist", "unreachable": "endpoint unreachable",
                    "credentials": "credentials rejected", "denied": "access denied",
                    "throttled": "endpoint failing"}.get(kind, "request failed")
            msg = describe(exc, kind, uri=self.root, bucket=self.bucket, endpoint=self.endpoint, secrets=self._secrets)
            return ValueError(f"output root {self.root} is not writable ({what}; endpoint {self.endpoint}, "
                              f"bucket {self.bucket!r}): {msg}")

        list_prefix = self._object_key("") if not self.prefix else self.prefix + "/"
        with_retry(lambda: self.fs.call_s3("list_objects_v2", Bucket=self.bucket, Prefix=list_prefix, MaxKeys=1),
                   budget=budget, fail=fail)
        probe = self._object_key(f"{WRITE_CHECK_NAME}-{uuid.uuid4().hex[:8]}")
        with_retry(lambda: self.fs.call_s3("put_object", Bucket=self.bucket, Key=probe, Body=b""),
                   budget=budget, fail=fail)
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=probe)
        except Exception:  # noqa: BLE001 - a write-only policy may forbid deletes; the probe is empty
            pass
