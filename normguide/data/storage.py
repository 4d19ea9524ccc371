"""Where bytes live: reading inputs and writing a run's outputs, on a local directory or S3.

Two kinds of access, one module:

* Inputs (the concept table, reference images) are single URIs: :func:`read_bytes`,
  :func:`exists_uri`. A bad location is a configuration problem, so errors are ``ValueError``
  or ``FileNotFoundError`` naming the URI (and, for S3, the endpoint and what was wrong).
* Outputs go under one root (``/abs/dir`` or ``s3://bucket/prefix``): :class:`Storage`, a
  key-value store of bytes with atomic single writes, batched concurrent writes, listings,
  and a :meth:`Storage.check_writable` to run before any GPU work.

Allowed URIs: local paths, ``file://`` and ``s3://`` (:func:`check_uri_scheme`). Keys under a
root are relative ``a/b/c.png`` paths (:func:`check_key`).

Retries. A write (and every other :class:`Storage` call) that fails because the endpoint is
unreachable, drops the connection, times out, or answers 5xx/throttling is retried with
exponential backoff and jitter: delay ``RETRY_INITIAL_DELAY * 2**n`` capped at
``RETRY_MAX_DELAY``, until ``retry_seconds`` (default :data:`RETRY_SECONDS`) have passed; then
:class:`StorageError` names the endpoint and the key. botocore's and s3fs's own retries are
turned down to a single attempt on the filesystems made here, so this loop alone decides how
long a run waits. Errors that retrying cannot fix (missing bucket, rejected credentials,
access denied) fail at once.

Fork and thread safety. s3fs runs its requests on one event loop in a background thread and
caches filesystem instances; neither survives ``os.fork`` (the loop thread is not copied, and
``AsyncFileSystem.loop`` raises "This class is not fork-safe" in a child). fsspec resets its
loop in a fork child (``os.register_at_fork``) but an instance made in the parent stays
broken, so filesystems here are made with ``skip_instance_cache=True`` and kept in a cache
keyed by process id: a :class:`Storage` (or module function) used after a fork makes a fresh
one in the child. The parent's instances are kept referenced in the child, never closed
there, because closing them would touch the parent's event loop and sockets. The sync s3fs
calls are safe from many threads (they are handed to the one loop thread).

Secrets. Credentials come from :class:`normguide.config.StorageConfig` (or a prefect-aws block,
or boto's own chain) and appear in no message raised here: messages name the endpoint, the
bucket and the key, and any server text is scrubbed of the configured secret values.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from normguide.config import StorageConfig

__all__ = [
    "RETRY_SECONDS",
    "INPUT_RETRY_SECONDS",
    "Storage",
    "LocalStorage",
    "S3Storage",
    "StorageError",
    "check_key",
    "check_uri_scheme",
    "exists_uri",
    "read_bytes",
    "storage_options_for",
]

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
#: Connections per S3 filesystem; bounds the concurrency of write_many's batches.
MAX_POOL_CONNECTIONS = 64

_TMP_SUFFIX = ".normguide-tmp"
_WRITE_CHECK_NAME = ".normguide-write-check"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_ALLOWED_SCHEMES = ("file", "s3")

# S3 error codes, by what they mean to the user.
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired",
     "InvalidClientTokenId", "AuthorizationHeaderMalformed", "UnrecognizedClientException"}
)
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403", "Forbidden"})
_THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
     "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "503", "500"}
)


class StorageError(RuntimeError):
    """A storage call failed for good: the endpoint stayed unreachable past the retry budget,
    or it refused the request. The message names the endpoint and the key, never a secret."""


# ---------------------------------------------------------------------------------------------
# URIs and keys
# ---------------------------------------------------------------------------------------------
def check_uri_scheme(uri: str, *, field: str) -> None:
    """Raise ``ValueError`` naming ``field`` and ``uri`` unless it is a local path, ``file://``
    or ``s3://bucket[/prefix]``."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"{field} must be a non-empty path or URI, got {uri!r}")
    m = _SCHEME_RE.match(uri)
    if m is None:
        return  # a local path; relative and '..' are the user's business
    scheme = m.group(1).lower()
    if scheme not in _ALLOWED_SCHEMES:
        raise ValueError(
            f"{field}: scheme {scheme + '://'!r} is not supported in {uri!r}; "
            "use a local path, file:// or s3://bucket/prefix"
        )
    parts = urlsplit(uri)
    if scheme == "s3" and not parts.netloc:
        raise ValueError(f"{field}: {uri!r} names no bucket; expected s3://bucket/prefix")
    if scheme == "file" and parts.netloc not in ("", "localhost"):
        raise ValueError(f"{field}: {uri!r} names a remote host; file:// URIs must be file:///absolute/path")


def check_key(key: str, *, allow_empty: bool = False, allow_trailing_slash: bool = False) -> str:
    """Return ``key`` if it is a safe relative key (``images/c1/x.png``), else raise ValueError.

    Rejected: a leading '/', a backslash, an empty segment ('a//b'), '.' or '..' segments,
    control characters, and names reserved for temporary files.
    """
    if not isinstance(key, str):
        raise ValueError(f"storage key must be a string, got {type(key).__name__} {key!r}")
    body = key[:-1] if (allow_trailing_slash and key.endswith("/")) else key
    if body == "":
        if allow_empty:
            return key
        raise ValueError("storage key must not be empty")
    if body.startswith("/"):
        raise ValueError(f"storage key {key!r} must be relative (no leading '/')")
    if "\\" in body:
        raise ValueError(f"storage key {key!r} must not contain a backslash")
    if any(ord(c) < 32 or ord(c) == 127 for c in body):
        raise ValueError(f"storage key {key!r} must not contain control characters")
    for seg in body.split("/"):
        if seg == "":
            raise ValueError(f"storage key {key!r} has an empty path segment")
        if seg in (".", ".."):
            raise ValueError(f"storage key {key!r} must not contain a {seg!r} segment")
    if body.endswith(_TMP_SUFFIX):
        raise ValueError(f"storage key {key!r} ends with {_TMP_SUFFIX!r}, reserved for temporary files")
    return key


def _is_s3(uri: str) -> bool:
    m = _SCHEME_RE.match(uri)
    return m is not None and m.group(1).lower() == "s3"


def _local_path(uri: str) -> str:
    """Absolute local path of a local path or file:// URI (not normalised beyond abspath)."""
    m = _SCHEME_RE.match(uri)
    if m is not None and m.group(1).lower() == "file":
        uri = urlsplit(uri).path or "/"
    return os.path.abspath(os.path.expanduser(uri))


def _split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    parts = urlsplit(uri)
    return parts.netloc, parts.path.strip("/")


# ---------------------------------------------------------------------------------------------
# Storage options (credentials)
# ---------------------------------------------------------------------------------------------
def storage_options_for(uri: str, config: StorageConfig | None) -> dict[str, Any]:
    """fsspec keyword arguments for ``uri``'s scheme, from the run's storage configuration.

    Local paths and file:// get ``{}``. For s3:// the result suits ``s3fs.S3FileSystem`` and
    ``pandas.read_parquet(storage_options=...)``: ``client_kwargs.endpoint_url`` and
    ``client_kwargs.region_name``, ``key``/``secret``/``token`` (unwrapped secrets),
    ``profile``, then ``config.extra`` merged on top (dicts merged one level deep). Fields not
    set in the config are filled from the prefect-aws ``AwsCredentials`` block named by
    ``aws_credentials_block``; what neither sets is left to boto's own chain (environment,
    ~/.aws, instance roles).
    """
    if not _is_s3(uri):
        return {}
    if config is None:
        return {}
    opts: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = {}
    endpoint = config.endpoint_url
    region = config.region_name
    profile = config.profile
    key = config.key.get_secret_value() if config.key is not None else None
    secret = config.secret.get_secret_value() if config.secret is not None else None
    token = config.token.get_secret_value() if config.token is not None else None

    if config.aws_credentials_block:
        block = _load_aws_credentials_block(config.aws_credentials_block)
        key = key or getattr(block, "aws_access_key_id", None)
        block_secret = getattr(block, "aws_secret_access_key", None)
        if secret is None and block_secret is not None:
            secret = block_secret.get_secret_value() if hasattr(block_secret, "get_secret_value") else block_secret
        block_token = getattr(block, "aws_session_token", None)
        if token is None and block_token is not None:
            token = block_token.get_secret_value() if hasattr(block_token, "get_secret_value") else block_token
        profile = profile or getattr(block, "profile_name", None)
        region = region or getattr(block, "region_name", None)
        params = getattr(block, "aws_client_parameters", None)
        endpoint = endpoint or getattr(params, "endpoint_url", None)

    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if region:
        client_kwargs["region_name"] = region
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    if key:
        opts["key"] = key
    if secret:
        opts["secret"] = secret
    if token:
        opts["token"] = token
    if profile:
        opts["profile"] = profile
    for name, value in config.extra.items():
        if isinstance(value, dict) and isinstance(opts.get(name), dict):
            opts[name] = {**opts[name], **value}
        else:
            opts[name] = value
    return opts


def _load_aws_credentials_block(name: str) -> Any:
    try:
        from prefect_aws import AwsCredentials  # type: ignore[import-not-found]
    except ImportError:
        raise ValueError(
            f"storage.aws_credentials_block={name!r} needs the prefect-aws package; "
            "install it with `pip install prefect-aws`, or set storage.key/secret, "
            "storage.profile or the AWS environment variables instead"
        ) from None
    try:
        return AwsCredentials.load(name, _sync=True)
    except ValueError as exc:
        raise ValueError(f"storage.aws_credentials_block: could not load AwsCredentials block {name!r}: {exc}") from None


def _secret_values(options: dict[str, Any]) -> list[str]:
    return [v for k in ("key", "secret", "token") if isinstance(v := options.get(k), str) and v]


def _endpoint_of(options: dict[str, Any]) -> str:
    """The endpoint as shown in messages: user:password@ removed; boto's default otherwise."""
    ep = (options.get("client_kwargs") or {}).get("endpoint_url") or options.get("endpoint_url")
    if not ep:
        region = (options.get("client_kwargs") or {}).get("region_name")
        return f"the default AWS S3 endpoint{f' ({region})' if region else ''}"
    parts = urlsplit(ep)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        ep = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return ep


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "**********")
    return text


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


def _s3_filesystem(options: dict[str, Any]) -> Any:
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
            # One attempt per botocore call; the retry loop in this module owns backoff.
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
# Error classification
# ---------------------------------------------------------------------------------------------
def _client_error(exc: BaseException) -> tuple[str | None, int | None]:
    """(S3 error code, HTTP status) of the botocore ClientError behind ``exc``, if any.

    s3fs turns ClientErrors into OSErrors (FileNotFoundError, PermissionError, ...) with the
    original as ``__cause__``; follow the chain.
    """
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        resp = getattr(e, "response", None)
        if isinstance(resp, dict) and "Error" in resp:
            code = resp.get("Error", {}).get("Code")
            status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return (str(code) if code is not None else None), status
        e = e.__cause__ or e.__context__
        seen += 1
    return None, None


def _is_connection_error(exc: BaseException) -> bool:
    from botocore.exceptions import HTTPClientError

    try:
        from aiohttp import ClientError as AiohttpClientError
    except ImportError:  # pragma: no cover - s3fs depends on aiohttp
        AiohttpClientError = ()  # type: ignore[assignment]
    from fsspec.exceptions import FSTimeoutError

    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, (HTTPClientError, AiohttpClientError, FSTimeoutError, asyncio.TimeoutError,
                          ConnectionError, TimeoutError)):
            return True
        e = e.__cause__ or e.__context__
    return False


def _classify(exc: BaseException) -> str:
    """One of: unreachable, throttled, no_bucket, no_key, credentials, denied, other."""
    code, status = _client_error(exc)
    if code is None and status is None:
        if _is_connection_error(exc):
            return "unreachable"
        if isinstance(exc, FileNotFoundError):
            return "no_key"
        if isinstance(exc, PermissionError):
            return "denied"
        return "other"
    if code in _THROTTLE_CODES or (status is not None and (status >= 500 or status == 429)):
        return "throttled"
    if code == "NoSuchBucket":
        return "no_bucket"
    if code in ("NoSuchKey", "404", "NotFound"):
        return "no_key"
    if code in _CREDENTIAL_CODES:
        return "credentials"
    if code in _DENIED_CODES or status == 403:
        return "denied"
    return "other"


def _retryable(kind: str) -> bool:
    return kind in ("unreachable", "throttled")


def _describe(exc: BaseException, kind: str, *, uri: str, bucket: str, endpoint: str, secrets: list[str]) -> str:
    """A one-line reason, naming where, never a secret."""
    code, status = _client_error(exc)
    if kind == "no_bucket":
        text = f"bucket {bucket!r} does not exist at S3 endpoint {endpoint} ({uri})"
    elif kind == "no_key":
        text = f"object not found: {uri} (S3 endpoint {endpoint})"
    elif kind == "credentials":
        text = (
            f"S3 endpoint {endpoint} rejected the credentials ({code}) for {uri}: check storage.key/secret/token, "
            "storage.profile, storage.aws_credentials_block or the AWS environment"
        )
    elif kind == "denied":
        text = f"access denied ({code or status}) by S3 endpoint {endpoint} for {uri} (bucket {bucket!r}): check the credentials' permissions"
    elif kind == "unreachable":
        text = f"cannot reach S3 endpoint {endpoint} for {uri}: {type(exc).__name__}: {exc}"
    elif kind == "throttled":
        text = f"S3 endpoint {endpoint} kept failing ({code or status}) for {uri}"
    else:
        text = f"S3 request for {uri} at endpoint {endpoint} failed: {type(exc).__name__}: {exc}"
    return _scrub(text, secrets)


def _backoff_delays(total_seconds: float) -> Iterator[float]:
    """Sleep lengths between attempts: exponential with jitter, ending once ``total_seconds``
    from now would be exceeded."""
    deadline = time.monotonic() + max(0.0, total_seconds)
    delay = RETRY_INITIAL_DELAY
    while True:
        pause = delay * random.uniform(0.5, 1.0)
        if time.monotonic() + pause > deadline:
            return
        yield pause
        delay = min(delay * 2.0, RETRY_MAX_DELAY)


# ---------------------------------------------------------------------------------------------
# Inputs: one URI at a time
# ---------------------------------------------------------------------------------------------
def read_bytes(uri: str, *, storage: StorageConfig | None = None, retry_seconds: float | None = None) -> bytes:
    """Read one input object (a concept table, a reference image) from a path or URI.

    Raises:
        FileNotFoundError: the file, the S3 object or its bucket does not exist (which, named).
        ValueError: unsupported scheme, a directory, rejected credentials, access denied, or
            the endpoint unreachable for ``retry_seconds`` (default INPUT_RETRY_SECONDS).
    """
    check_uri_scheme(uri, field="uri")
    if not _is_s3(uri):
        path = _local_path(uri)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"file not found: {uri!r}", path) from None
        except IsADirectoryError:
            raise ValueError(f"{uri!r} is a directory, expected a file") from None
        except PermissionError:
            raise ValueError(f"permission denied reading {uri!r}") from None
    options = storage_options_for(uri, storage)
    bucket, key = _split_s3(uri)
    if not key:
        raise ValueError(f"{uri!r} names a bucket, not an object")
    fs = _s3_filesystem(options)
    budget = INPUT_RETRY_SECONDS if retry_seconds is None else retry_seconds
    return _with_retry(lambda: _get_object(fs, bucket, key), budget=budget,
                       fail=_input_failure(uri, bucket, options, fs))


def exists_uri(uri: str, *, storage: StorageConfig | None = None, retry_seconds: float | None = None) -> bool:
    """Whether a local path exists, or an S3 object (or, for ``s3://bucket``, the bucket) exists.

    Errors other than "not there" (credentials, unreachable endpoint) raise as in read_bytes.
    """
    check_uri_scheme(uri, field="uri")
    if not _is_s3(uri):
        return os.path.exists(_local_path(uri))
    options = storage_options_for(uri, storage)
    bucket, key = _split_s3(uri)
    fs = _s3_filesystem(options)
    budget = INPUT_RETRY_SECONDS if retry_seconds is None else retry_seconds
    if key:
        call = lambda: fs.call_s3("head_object", Bucket=bucket, Key=key)  # noqa: E731
    else:
        call = lambda: fs.call_s3("head_bucket", Bucket=bucket)  # noqa: E731
    try:
        _with_retry(call, budget=budget, fail=_input_failure(uri, bucket, options, fs))
    except FileNotFoundError:
        return False
    return True


def _input_failure(uri: str, bucket: str, options: dict[str, Any], fs: Any) -> Callable[[BaseException, str], BaseException]:
    endpoint, secrets = _endpoint_of(options), _secret_values(options)

    def fail(exc: BaseException, kind: str) -> BaseException:
        exc, kind = _refine_forbidden(fs, bucket, exc, kind)
        msg = _describe(exc, kind, uri=uri, bucket=bucket, endpoint=endpoint, secrets=secrets)
        if kind in ("no_key", "no_bucket"):
            return FileNotFoundError(errno.ENOENT, msg, uri)
        return ValueError(msg)

    return fail


def _get_object(fs: Any, bucket: str, key: str) -> bytes:
    """One GET (s3fs's cat_file sends a HEAD first, whose errors have no body to tell a wrong
    key from a wrong secret)."""
    from fsspec.asyn import sync

    async def get() -> bytes:
        resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        try:
            return await resp["Body"].read()
        finally:
            resp["Body"].close()

    return sync(fs.loop, get)


def _refine_forbidden(fs: Any, bucket: str, exc: BaseException, kind: str) -> tuple[BaseException, str]:
    """A HEAD answered 403 carries no error code: ask again with a request whose error has a
    body (a one-key listing) to tell rejected credentials from missing permissions."""
    code, _ = _client_error(exc)
    if kind != "denied" or code not in ("403", "Forbidden", None):
        return exc, kind
    try:
        fs.call_s3("list_objects_v2", Bucket=bucket, MaxKeys=1)
    except Exception as probe_exc:  # noqa: BLE001 - only used to explain the first error
        probe_kind = _classify(probe_exc)
        if probe_kind in ("credentials", "no_bucket"):
            return probe_exc, probe_kind
    return exc, kind


def _with_retry(call: Callable[[], T], *, budget: float, fail: Callable[[BaseException, str], BaseException]) -> T:
    """``call()``, retried with backoff on unreachable/5xx/throttling for ``budget`` seconds;
    a final failure is turned into ``fail(exc, kind)``."""
    delays = _backoff_delays(budget)
    while True:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised as ours
            kind = _classify(exc)
            if _retryable(kind):
                pause = next(delays, None)
                if pause is not None:
                    time.sleep(pause)
                    continue
            raise fail(exc, kind) from exc


# ---------------------------------------------------------------------------------------------
# Outputs: a root as a key-value store of bytes
# ---------------------------------------------------------------------------------------------
def _batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def _as_bytes(key: str, data: Any) -> bytes:
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
    def open(cls, root: str, *, storage: StorageConfig | None = None, retry_seconds: float | None = None) -> Storage:
        """The storage for ``root``: a local path, ``file://`` URI or ``s3://bucket[/prefix]``.

        Args:
            root: Output root; nothing is created until the first write or check_writable().
            storage: S3 endpoint and credentials (ignored for local roots).
            retry_seconds: Total retry time for unreachable/5xx endpoints (default RETRY_SECONDS).
        """
        check_uri_scheme(root, field="output root")
        budget = RETRY_SECONDS if retry_seconds is None else float(retry_seconds)
        if _is_s3(root):
            return S3Storage(root, storage=storage, retry_seconds=budget)
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
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> str:
        raise NotImplementedError

    def write_many(self, items: Iterable[tuple[str, bytes]], *, batch_size: int = 64) -> list[str]:
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        raise NotImplementedError

    def check_writable(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _check_batch_size(batch_size: int) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


class LocalStorage(Storage):
    """A local directory. Writes go to a temporary file in the same directory, then
    ``os.replace``: a reader sees the old object or the new one, never a partial one, and a
    crashed write leaves at most a ``.*.normguide-tmp`` file that listings ignore."""

    def __init__(self, root: str, *, retry_seconds: float = RETRY_SECONDS) -> None:
        path = _local_path(root)
        self.root = path.rstrip("/") or "/"
        self.retry_seconds = retry_seconds

    def _path(self, key: str) -> str:
        return self.uri(key)

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def _children(self, parent: str) -> set[str]:
        directory = os.path.join(self.root, parent) if parent else self.root
        try:
            with os.scandir(directory) as it:
                names = [e.name for e in it if e.is_file() and not e.name.endswith(_TMP_SUFFIX)]
        except (FileNotFoundError, NotADirectoryError):
            return set()
        return {f"{parent}/{n}" if parent else n for n in names}

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"object not found: {path}", path) from None
        except IsADirectoryError:
            raise FileNotFoundError(errno.ENOENT, f"object not found: {path} is a directory", path) from None

    def write_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        data = _as_bytes(key, data)
        directory, name = os.path.split(path)
        tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
        try:
            os.makedirs(directory, exist_ok=True)
            # O_EXCL on a fresh name; mode 0o666 & umask like any created file (mkstemp's 0600
            # would make the dataset unreadable to other users after the rename).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            except BaseException:
                os.unlink(tmp)
                raise
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path

    def write_many(self, items: Iterable[tuple[str, bytes]], *, batch_size: int = 64) -> list[str]:
        """Write many objects with a thread pool, ``batch_size`` at a time (the iterable is
        consumed one batch at a time, so memory stays bounded). Returns URIs in input order."""
        self._check_batch_size(batch_size)
        uris: list[str] = []
        with ThreadPoolExecutor(max_workers=min(batch_size, 8), thread_name_prefix="normguide-write") as pool:
            for batch in _batched(items, batch_size):
                checked = [(check_key(k), _as_bytes(k, d)) for k, d in batch]
                # The last value of a repeated key wins, as if written one after the other.
                last = dict(checked)
                list(pool.map(lambda kv: self.write_bytes(*kv), last.items()))
                uris.extend(self.uri(k) for k, _ in checked)
        return uris

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (a directory-like prefix: 'images/c1' lists 'images/c1/...'),
        sorted, relative to the root."""
        check_key(prefix, allow_empty=True, allow_trailing_slash=True)
        prefix = prefix.rstrip("/")
        top = os.path.join(self.root, prefix) if prefix else self.root
        keys: list[str] = []
        for dirpath, _dirs, files in os.walk(top):
            rel = os.path.relpath(dirpath, self.root)
            for name in files:
                if not name.endswith(_TMP_SUFFIX):
                    keys.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
        return sorted(keys)

    def check_writable(self) -> None:
        """Create the root if needed and write and remove a probe file; ValueError if not."""
        try:
            os.makedirs(self.root, exist_ok=True)
        except FileExistsError:
            raise ValueError(f"output root {self.root!r} exists and is not a directory") from None
        except OSError as exc:
            raise ValueError(f"cannot create output root {self.root!r}: {exc.strerror or exc}") from None
        if not os.path.isdir(self.root):
            raise ValueError(f"output root {self.root!r} exists and is not a directory")
        probe = os.path.join(self.root, f"{_WRITE_CHECK_NAME}-{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
        try:
            with open(probe, "wb"):
                pass
        except OSError as exc:
            raise ValueError(f"output root {self.root!r} is not writable: {exc.strerror or exc}") from None
        finally:
            try:
                os.unlink(probe)
            except OSError:
                pass


class S3Storage(Storage):
    """``s3://bucket/prefix`` through s3fs. A single put is atomic on S3 (so is a multipart
    upload, visible only once completed); write_many sends each batch as concurrent puts on
    s3fs's event loop and retries the failed objects with backoff."""

    def __init__(self, root: str, *, storage: StorageConfig | None = None, retry_seconds: float = RETRY_SECONDS) -> None:
        bucket, prefix = _split_s3(root)
        if not bucket:
            raise ValueError(f"output root {root!r} names no bucket; expected s3://bucket/prefix")
        if prefix:
            check_key(prefix)
        self.bucket, self.prefix = bucket, prefix
        self.root = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.retry_seconds = retry_seconds
        self._options = storage_options_for(self.root, storage)
        self.endpoint = _endpoint_of(self._options)
        self._secrets = _secret_values(self._options)

    # The filesystem is looked up per call: after a fork the child gets its own (see module doc).
    @property
    def fs(self) -> Any:
        return _s3_filesystem(self._options)

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{self._object_key(check_key(key))}"

    def _fail(self, uri: str) -> Callable[[BaseException, str], BaseException]:
        def fail(exc: BaseException, kind: str) -> BaseException:
            exc, kind = _refine_forbidden(self.fs, self.bucket, exc, kind)
            if kind == "no_key":
                return FileNotFoundError(errno.ENOENT, f"object not found: {uri} (S3 endpoint {self.endpoint})", uri)
            msg = _describe(exc, kind, uri=uri, bucket=self.bucket, endpoint=self.endpoint, secrets=self._secrets)
            if _retryable(kind):
                msg += f" (gave up after retrying for {self.retry_seconds:g} s)"
            return StorageError(msg)

        return fail

    def exists(self, key: str) -> bool:
        path = self._path(key)
        bucket, okey = path.split("/", 1)
        try:
            _with_retry(lambda: self.fs.call_s3("head_object", Bucket=bucket, Key=okey),
                        budget=self.retry_seconds, fail=self._fail(self.uri(key)))
        except FileNotFoundError:
            return False
        return True

    def _children(self, parent: str) -> set[str]:
        directory = f"{self.bucket}/{self._object_key(parent)}" if parent else self._path_root()
        try:
            entries = _with_retry(lambda: self.fs.ls(directory, detail=True, refresh=True),
                                  budget=self.retry_seconds, fail=self._fail(f"s3://{directory}"))
        except FileNotFoundError:
            return set()
        base = self._path_root() + "/"
        return {e["name"][len(base):] for e in entries if e.get("type") == "file" and e["name"].startswith(base)}

    def _path_root(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        bucket, okey = path.split("/", 1)
        return _with_retry(lambda: _get_object(self.fs, bucket, okey), budget=self.retry_seconds, fail=self._fail(self.uri(key)))

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
        for batch in _batched(items, batch_size):
            checked = [(check_key(k), _as_bytes(k, d)) for k, d in batch]
            self._put_batch(dict(checked))
            uris.extend(self.uri(k) for k, _ in checked)
        return uris

    def _put_batch(self, pending: dict[str, bytes]) -> None:
        from fsspec.asyn import sync

        delays = _backoff_delays(self.retry_seconds)
        while pending:
            fs = self.fs
            keys = list(pending)
            results = sync(fs.loop, _put_all, fs, [(self._path(k), pending[k]) for k in keys])
            failed = {k: r for k, r in zip(keys, results) if isinstance(r, BaseException)}
            if not failed:
                return
            kinds = {k: _classify(e) for k, e in failed.items()}
            fatal = [k for k in keys if k in kinds and not _retryable(kinds[k])]
            if not fatal:
                pause = next(delays, None)
                if pause is not None:
                    time.sleep(pause)
                    pending = {k: pending[k] for k in keys if k in failed}
                    continue
            first = fatal[0] if fatal else next(iter(failed))
            msg = _describe(failed[first], kinds[first], uri=self.uri(first), bucket=self.bucket,
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
            found = _with_retry(lambda: self.fs.find(top + "/"), budget=self.retry_seconds,
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
            msg = _describe(exc, kind, uri=self.root, bucket=self.bucket, endpoint=self.endpoint, secrets=self._secrets)
            return ValueError(f"output root {self.root} is not writable ({what}; endpoint {self.endpoint}, "
                              f"bucket {self.bucket!r}): {msg}")

        list_prefix = self._object_key("") if not self.prefix else self.prefix + "/"
        _with_retry(lambda: self.fs.call_s3("list_objects_v2", Bucket=self.bucket, Prefix=list_prefix, MaxKeys=1),
                    budget=budget, fail=fail)
        probe = self._object_key(f"{_WRITE_CHECK_NAME}-{uuid.uuid4().hex[:8]}")
        _with_retry(lambda: self.fs.call_s3("put_object", Bucket=self.bucket, Key=probe, Body=b""),
                    budget=budget, fail=fail)
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=probe)
        except Exception:  # noqa: BLE001 - a write-only policy may forbid deletes; the probe is empty
            pass


async def _put_all(fs: Any, items: list[tuple[str, bytes]]) -> list[Any]:
    """Put all ``items`` concurrently on the filesystem's loop; exceptions are returned, not
    raised, so the caller learns which objects to retry."""
    return await asyncio.gather(*(fs._pipe_file(path, data) for path, data in items), return_exceptions=True)
