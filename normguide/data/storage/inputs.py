"""The input side: single URIs (the concept table, reference images), read or checked one at a time.

A bad location is a configuration problem, so errors are ``ValueError`` or
``FileNotFoundError`` naming the URI (and, for S3, the endpoint and what was wrong). Input
calls retry an unreachable endpoint for :data:`~.retry.INPUT_RETRY_SECONDS` by default: a
wrong endpoint in the configuration should fail quickly.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from normguide.data.storage.errors import describe
from normguide.data.storage.options import endpoint_of, secret_values, storage_options_for
from normguide.data.storage.retry import INPUT_RETRY_SECONDS, with_retry
from normguide.data.storage.s3 import ObjectTooLarge, get_object, refine_forbidden, s3_filesystem, with_timeouts
from normguide.data.storage.uris import check_uri_scheme, is_s3, local_path, split_s3

if TYPE_CHECKING:
    from normguide.config import StorageConfig

__all__ = ["MAX_INPUT_BYTES", "exists_uri", "read_bytes"]

#: Largest input (concept table, reference image) read: a local file's size is checked
#: before reading (stat), an S3 object's from its GET response's Content-Length before its body is read.
MAX_INPUT_BYTES = 64 * 1024 * 1024


def read_bytes(uri: str, *, storage_config: StorageConfig | None = None,
               retry_seconds: float | None = None) -> bytes:
    """Read one input object (a concept table, a reference image) from a path or URI.

    Raises:
        FileNotFoundError: the file, the S3 object or its bucket does not exist (which, named).
        ValueError: unsupported scheme, a directory, a local file that is not a regular file (a
            FIFO, a device), a file or S3 object larger than MAX_INPUT_BYTES (checked before
            reading), rejected
            credentials, access denied, or the endpoint unreachable for ``retry_seconds``
            (default INPUT_RETRY_SECONDS).
    """
    check_uri_scheme(uri, field="uri")
    if not is_s3(uri):
        return _read_local(uri, local_path(uri))
    options = storage_options_for(uri, storage_config)
    bucket, key = split_s3(uri)
    if not key:
        raise ValueError(f"{uri!r} names a bucket, not an object")
    budget = INPUT_RETRY_SECONDS if retry_seconds is None else retry_seconds
    fs = s3_filesystem(with_timeouts(options, budget))

    def call() -> bytes | ObjectTooLarge:
        try:
            return get_object(fs, bucket, key, max_bytes=MAX_INPUT_BYTES)
        except ObjectTooLarge as exc:
            return exc

    data = with_retry(call, budget=budget, fail=_input_failure(uri, bucket, options, fs))
    if isinstance(data, ObjectTooLarge):
        raise ValueError(f"{uri!r} is {data.size} bytes, over the input limit of {MAX_INPUT_BYTES} bytes "
                         "(its size was checked before reading)")
    if len(data) > MAX_INPUT_BYTES:  # an endpoint that sent no Content-Length
        raise ValueError(f"{uri!r} is over the input limit of {MAX_INPUT_BYTES} bytes")
    return data


def _describe_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_regular(uri: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{uri!r} is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{uri!r} is {_describe_kind(st.st_mode)}, expected a regular file")
    if st.st_size > MAX_INPUT_BYTES:
        raise ValueError(f"{uri!r} is {st.st_size} bytes, over the input limit of {MAX_INPUT_BYTES} bytes")


def _read_local(uri: str, path: str) -> bytes:
    """A regular file's bytes; special files and files over MAX_INPUT_BYTES are refused before
    any read (stat first; opened non-blocking and checked again, so a swapped-in FIFO cannot hang)."""
    try:
        _check_regular(uri, os.stat(path))
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"file not found: {uri!r}", path) from None
    except IsADirectoryError:
        raise ValueError(f"{uri!r} is a directory, expected a file") from None
    except PermissionError:
        raise ValueError(f"permission denied reading {uri!r}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        _check_regular(uri, st)
        # sized by fstat: a read of MAX_INPUT_BYTES + 1 allocates that much first (~75 us for each
        # small file; 30,000 references in `validate` spent 2 s on it); a file that grew since is
        # read on, to the limit
        data = f.read(st.st_size + 1)
        if len(data) > st.st_size:
            data += f.read(MAX_INPUT_BYTES + 1 - len(data))
    if len(data) > MAX_INPUT_BYTES:
        raise ValueError(f"{uri!r} is over the input limit of {MAX_INPUT_BYTES} bytes")
    return data


def exists_uri(uri: str, *, storage_config: StorageConfig | None = None,
               retry_seconds: float | None = None) -> bool:
    """Whether a local path exists, or an S3 object (or, for ``s3://bucket``, the bucket) exists.

    Errors other than "not there" (credentials, unreachable endpoint) raise as in read_bytes.
    """
    check_uri_scheme(uri, field="uri")
    if not is_s3(uri):
        return os.path.exists(local_path(uri))
    options = storage_options_for(uri, storage_config)
    bucket, key = split_s3(uri)
    budget = INPUT_RETRY_SECONDS if retry_seconds is None else retry_seconds
    fs = s3_filesystem(with_timeouts(options, budget))
    if key:
        call = lambda: fs.call_s3("head_object", Bucket=bucket, Key=key)  # noqa: E731
    else:
        call = lambda: fs.call_s3("head_bucket", Bucket=bucket)  # noqa: E731
    try:
        with_retry(call, budget=budget, fail=_input_failure(uri, bucket, options, fs))
    except FileNotFoundError:
        return False
    return True


def _input_failure(uri: str, bucket: str, options: dict[str, Any], fs: Any) -> Callable[[BaseException, str], BaseException]:
    endpoint, secrets = endpoint_of(options), secret_values(options)

    def fail(exc: BaseException, kind: str) -> BaseException:
        exc, kind = refine_forbidden(fs, bucket, exc, kind)
        msg = describe(exc, kind, uri=uri, bucket=bucket, endpoint=endpoint, secrets=secrets)
        if kind in ("no_key", "no_bucket"):
            return FileNotFoundError(errno.ENOENT, msg, uri)
        return ValueError(msg)

    return fail
