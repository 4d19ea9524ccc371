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

Timeouts follow the budget. A stalled endpoint (it accepts connections and never answers) would
otherwise hold one request for botocore's default 60 s read timeout whatever the budget. Each
filesystem gets botocore ``connect_timeout``/``read_timeout`` derived from its retry budget
(:func:`request_timeouts`: a third of it for reads, a sixth for connecting, within bounds), so a
stall times out like a refused connection and is retried within the budget: a call fails at
most about one read timeout after its budget is spent. ``storage.extra.config_kwargs`` may set
either timeout itself. Puts go out without ``Expect: 100-continue`` (see
:func:`_no_expect_continue`), whose wait has no timeout at all in aiohttp.
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
from normguide.errors import InputError

if TYPE_CHECKING:
    from normguide.config import StorageConfig

__all__ = ["MAX_POOL_CONNECTIONS", "ObjectTooLarge", "S3Storage", "get_object", "refine_forbidden", "request_timeouts",
           "s3_filesystem", "with_timeouts"]

#: Connections per S3 filesystem; bounds the concurrency of write_many's batches.
MAX_POOL_CONNECTIONS = 64

#: Bounds of the per-request timeouts derived from a retry budget (seconds).
MIN_READ_TIMEOUT, MAX_READ_TIMEOUT = 2.0, 60.0
MIN_CONNECT_TIMEOUT, MAX_CONNECT_TIMEOUT = 1.0, 10.0


def request_timeouts(budget: float) -> dict[str, float]:
    """botocore ``connect_timeout`` and ``read_timeout`` for a retry budget of ``budget`` seconds:
    a third of the budget for a read (so a stall is retried at least twice within it), a sixth
    for connecting, each within [MIN, MAX]. Budget 10 s: 1.7 s connect, 3.3 s read; budget 60 s:
    10 s and 20 s."""
    budget = max(0.0, float(budget))
    return {"connect_timeout": min(MAX_CONNECT_TIMEOUT, max(MIN_CONNECT_TIMEOUT, budget / 6)),
            "read_timeout": min(MAX_READ_TIMEOUT, max(MIN_READ_TIMEOUT, budget / 3))}


def with_timeouts(options: dict[str, Any], budget: float) -> dict[str, Any]:
    """``options`` with :func:`request_timeouts` in ``config_kwargs`` (values the options set
    themselves win)."""
    config_kwargs = {**request_timeouts(budget), **(options.get("config_kwargs") or {})}
    return {**options, "config_kwargs": config_kwargs}


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


#: Environment variables boto reads credentials from: a filesystem made under other values of
#: them is not reused (its session holds the credentials it resolved when it was made).
_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                   "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


def _env_credentials_fingerprint() -> str:
    """A hash (never the values) of the credential environment variables."""
    import hashlib

    blob = "\0".join(f"{k}={os.environ.get(k, '')}" for k in _CREDENTIAL_ENV)
    return hashlib.sha256(blob.encode()).hexdigest()


def s3_filesystem(options: dict[str, Any]) -> Any:
    """An ``s3fs.S3FileSystem`` for ``options`` owned by this process (see module docstring)."""
    import s3fs
    from fsspec.utils import tokenize

    cache_key = (os.getpid(), tokenize(options, _env_credentials_fingerprint()))
    fs = _FS_CACHE.get(cache_key)
    if fs is not None:
        return fs
    with _FS_LOCK:
        fs = _FS_CACHE.get(cache_key)
        if fs is None:
            kwargs = dict(options)
            # One attempt per botocore call; the retry loop in .retry owns backoff. (botocore's
            # client-config "max_attempts" counts retries, not attempts: 1 meant two attempts.)
            config_kwargs = {"retries": {"total_max_attempts": 1, "mode": "standard"},
                             "max_pool_connections": MAX_POOL_CONNECTIONS}
            config_kwargs.update(kwargs.pop("config_kwargs", None) or {})
            kwargs["config_kwargs"] = config_kwargs
            kwargs.setdefault("use_listings_cache", False)
            fs = s3fs.S3FileSystem(skip_instance_cache=True, **kwargs)
            if fs.session is None:  # the session s3fs would make (its kwargs: profile, ...), plus one hook
                import aiobotocore.session

                fs.session = aiobotocore.session.AioSession(**fs.kwargs)
                fs.session.register("before-send.s3", _no_expect_continue)
            # s3fs's own _error_wrapper retries 5 times (~2 s); one try here, see above.
            fs.retries = 1
            _FS_CACHE[cache_key] = fs
    return fs


def _no_expect_continue(request: Any, **_: Any) -> None:
    """Send PutObject/UploadPart bodies without ``Expect: 100-continue`` (botocore adds it).

    aiohttp starts a request's read timeout only once the body is sent, and with that header it
    sends the body only after the server's "100 Continue": a stalled endpoint that never sends
    one held a put for ever, whatever ``read_timeout`` (issue 12). Without the header the body
    goes out at once and the read timeout covers the wait for the answer. The cost: a put that
    the endpoint refuses (403, redirect) sends its body in vain.
    """
    if "Expect" in request.headers:
        del request.headers["Expect"]


# ---------------------------------------------------------------------------------------------
# The requests sent here rather than through s3fs's file-level calls
# ---------------------------------------------------------------------------------------------
def get_object(fs: Any, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
    """The object's bytes from ONE GET with no request before it, so that an error is the
    GET's own, whose body carries an S3 error code (a wrong key told from a wrong secret).
    With ``max_bytes``, the response's Content-Length is checked before the body is read:
    :class:`ObjectTooLarge` if it is over (the body is closed unread).

    Public calls only: s3fs's ``call_s3`` sends the request and returns the response with its
    body unread; the body is then read (and closed) on the filesystem's loop with
    ``fsspec.asyn.sync``. ``fs.cat_file`` would not do: from s3fs 2026.3 on it sends a HEAD
    first (to decide on a ranged concurrent read) unless given ``max_concurrency=1``, a keyword
    that s3fs before 2026.3 does not accept, and a HEAD's 403/404 has no body.
    """
    from fsspec.asyn import sync

    resp = fs.call_s3("get_object", Bucket=bucket, Key=key)
    if max_bytes is not None and (size := resp.get("ContentLength")) is not None and size > max_bytes:
        sync(fs.loop, _close, resp["Body"])  # the body is never read
        raise ObjectTooLarge(size)
    return sync(fs.loop, _read_and_close, resp["Body"])


class ObjectTooLarge(InputError):
    """An object's Content-Length is over the ``max_bytes`` given to :func:`get_object`."""

    def __init__(self, size: int) -> None:
        super().__init__(f"object is {size} bytes")
        self.size = size


async def _close(body: Any) -> None:
    body.close()


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


def conditional_writes_supported() -> bool:
    """Whether the installed botocore sends ``If-None-Match``/``If-Match`` on PutObject and
    ``If-Match`` on DeleteObject (s3fs silently drops parameters botocore does not know)."""
    global _CONDITIONAL
    if _CONDITIONAL is None:
        import botocore.session

        model = botocore.session.get_session().get_service_model("s3")
        put = model.operation_model("PutObject").input_shape.members
        delete = model.operation_model("DeleteObject").input_shape.members
        _CONDITIONAL = "IfNoneMatch" in put and "IfMatch" in put and "IfMatch" in delete
    return _CONDITIONAL


_CONDITIONAL: bool | None = None


def _refused(exc: BaseException) -> bool:
    """A conditional request's precondition did not hold (412), a concurrent conditional write
    won (409), or the object to match is gone (404)."""
    code, status = client_error(exc)
    if status in (412, 409) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
        return True
    return classify(exc) == "no_key"


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
        self._base_options = storage_options_for(self.root, storage_config)
        self._options = with_timeouts(self._base_options, retry_seconds)
        self.endpoint = endpoint_of(self._options)
        self._secrets = secret_values(self._options)

    # The filesystem is looked up per call: after a fork the child gets its own (see module doc).
    @property
    def fs(self) -> Any:
        return s3_filesystem(self._options)

    def _fs_for(self, budget: float) -> Any:
        """A filesystem whose request timeouts follow ``budget`` rather than retry_seconds."""
        return s3_filesystem(with_timeouts(self._base_options, budget))

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

    def _children_sizes(self, parent: str) -> dict[str, int]:
        directory = f"{self.bucket}/{self._object_key(parent)}" if parent else self._path_root()
        try:
            entries = with_retry(lambda: self.fs.ls(directory, detail=True, refresh=True),
                                 budget=self.retry_seconds, fail=self._fail(f"s3://{directory}"))
        except FileNotFoundError:
            return {}
        base = self._path_root() + "/"
        return {e["name"][len(base):]: int(e.get("size") or 0) for e in entries
                if e.get("type") == "file" and e["name"].startswith(base)}

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

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` (batched DeleteObjects requests through s3fs, retried like a write)."""
        keys = list(keys)
        if keys:
            paths = [self._path(k) for k in keys]
            with_retry(lambda: self.fs.rm(paths), budget=self.retry_seconds, fail=self._fail(self.uri(keys[0])))

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

        fs = self._fs_for(budget)
        list_prefix = self._object_key("") if not self.prefix else self.prefix + "/"
        with_retry(lambda: fs.call_s3("list_objects_v2", Bucket=self.bucket, Prefix=list_prefix, MaxKeys=1),
                   budget=budget, fail=fail)
        probe = self._object_key(f"{WRITE_CHECK_NAME}-{uuid.uuid4().hex[:8]}")
        with_retry(lambda: fs.call_s3("put_object", Bucket=self.bucket, Key=probe, Body=b""),
                   budget=budget, fail=fail)
        try:
            fs.call_s3("delete_object", Bucket=self.bucket, Key=probe)
        except Exception:  # noqa: BLE001 - a write-only policy may forbid deletes; the probe is empty
            pass

    # -- lease primitives (normguide.data.storage.lease) -----------------------------------------
    # Conditional requests: create with If-None-Match: *, replace and delete with If-Match: the
    # ETag read. Without botocore support: plain requests, read back after FALLBACK_SETTLE_S
    # (a race window, documented in the lease module). The version is the ETag.
    def _lease_call(self, key: str, call: Callable[[], Any]) -> Any:
        """``call()`` with retries; a refused precondition returns None."""
        def attempt() -> Any:
            try:
                return call()
            except Exception as exc:
                if _refused(exc):
                    return None
                raise

        return with_retry(attempt, budget=self.retry_seconds, fail=self._fail(self.uri(key)))

    def _lease_read(self, key: str) -> tuple[bytes, Any] | None:
        from fsspec.asyn import sync

        bucket, okey = self._path(key).split("/", 1)

        def call() -> tuple[bytes, Any]:
            fs = self.fs
            resp = fs.call_s3("get_object", Bucket=bucket, Key=okey)
            return sync(fs.loop, _read_and_close, resp["Body"]), resp.get("ETag")

        try:
            return with_retry(call, budget=self.retry_seconds, fail=self._fail(self.uri(key)))
        except FileNotFoundError:
            return None

    def _lease_settled(self, key: str, data: bytes) -> tuple[bool, Any]:
        """Fallback: after FALLBACK_SETTLE_S, whether ``key`` holds ``data`` (and its ETag)."""
        from normguide.data.storage.lease import FALLBACK_SETTLE_S

        time.sleep(FALLBACK_SETTLE_S)
        found = self._lease_read(key)
        return (True, found[1]) if found is not None and found[0] == data else (False, None)

    def _lease_create(self, key: str, data: bytes) -> tuple[bool, Any]:
        bucket, okey = self._path(key).split("/", 1)
        if not conditional_writes_supported():
            if self._lease_read(key) is not None:
                return False, None
            self._lease_call(key, lambda: self.fs.call_s3("put_object", Bucket=bucket, Key=okey, Body=data))
            return self._lease_settled(key, data)
        resp = self._lease_call(key, lambda: self.fs.call_s3("put_object", Bucket=bucket, Key=okey, Body=data,
                                                             IfNoneMatch="*"))
        return (False, None) if resp is None else (True, resp.get("ETag"))

    def _lease_replace(self, key: str, data: bytes, version: Any) -> tuple[bool, Any]:
        bucket, okey = self._path(key).split("/", 1)
        if not conditional_writes_supported() or version is None:
            found = self._lease_read(key)
            if found is None or found[1] != version:
                return False, None
            self._lease_call(key, lambda: self.fs.call_s3("put_object", Bucket=bucket, Key=okey, Body=data))
            return self._lease_settled(key, data)
        resp = self._lease_call(key, lambda: self.fs.call_s3("put_object", Bucket=bucket, Key=okey, Body=data,
                                                             IfMatch=version))
        return (False, None) if resp is None else (True, resp.get("ETag"))

    def _lease_delete(self, key: str, version: Any) -> bool:
        bucket, okey = self._path(key).split("/", 1)
        if not conditional_writes_supported() or version is None:
            found = self._lease_read(key)
            if found is None or found[1] != version:
                return False
            self._lease_call(key, lambda: self.fs.call_s3("delete_object", Bucket=bucket, Key=okey))
            return True
        return self._lease_call(key, lambda: self.fs.call_s3("delete_object", Bucket=bucket, Key=okey,
                                                             IfMatch=version)) is not None
