"""What a failed storage call means, and how it is told to the user.

:func:`classify` sorts an exception from s3fs/botocore/aiohttp into one kind: ``unreachable``
(connection refused or dropped, timeout), ``throttled`` (5xx, 429, SlowDown and the like),
``no_bucket``, ``no_key``, ``credentials`` (rejected key, secret or token), ``denied``, or
``other``. Only the first two are worth retrying (:func:`retryable`). :func:`describe` turns a
failure into one line naming the endpoint, the bucket and the URI, scrubbed of secrets.
"""

from __future__ import annotations

import asyncio

from normguide.data.storage.options import scrub
from normguide.errors import StorageError  # the storage kind of normguide's error family

__all__ = ["StorageError", "classify", "client_error", "describe", "retryable"]




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


def client_error(exc: BaseException) -> tuple[str | None, int | None]:
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


def _is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is a connect or read timeout."""
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, (ConnectTimeoutError, ReadTimeoutError, asyncio.TimeoutError, TimeoutError)):
            return True
        try:
            from aiohttp import ServerTimeoutError
        except ImportError:  # pragma: no cover
            ServerTimeoutError = ()  # type: ignore[assignment]
        if isinstance(e, ServerTimeoutError):
            return True
        e = e.__cause__ or e.__context__
    return False


def classify(exc: BaseException) -> str:
    """One of: unreachable, throttled, no_bucket, no_key, credentials, denied, other."""
    code, status = client_error(exc)
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


def retryable(kind: str) -> bool:
    """Whether a failure of this kind may go away by itself (endpoint down, 5xx, throttling)."""
    return kind in ("unreachable", "throttled")


def describe(exc: BaseException, kind: str, *, uri: str, bucket: str, endpoint: str, secrets: list[str]) -> str:
    """A one-line reason, naming where, never a secret."""
    code, status = client_error(exc)
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
    elif kind == "unreachable" and _is_timeout(exc):
        text = (f"cannot reach S3 endpoint {endpoint} for {uri}: it did not answer in time (a stalled or "
                f"overloaded endpoint): {type(exc).__name__}: {exc}")
    elif kind == "unreachable":
        text = f"cannot reach S3 endpoint {endpoint} for {uri}: {type(exc).__name__}: {exc}"
    elif kind == "throttled":
        text = f"S3 endpoint {endpoint} kept failing ({code or status}) for {uri}"
    else:
        text = f"S3 request for {uri} at endpoint {endpoint} failed: {type(exc).__name__}: {exc}"
    return scrub(text, secrets)
