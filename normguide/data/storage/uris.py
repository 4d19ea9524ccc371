"""Which URIs may name an input or an output root, and which keys may name an object under one.

Allowed URIs: local paths, ``file://`` and ``s3://`` (:func:`check_uri_scheme`). Keys under a
root are relative ``a/b/c.png`` paths (:func:`check_key`). The other helpers here tell a local
path from an S3 URI and take either apart; they do no IO.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

__all__ = ["TMP_SUFFIX", "check_key", "check_output_root", "check_uri_scheme", "is_s3", "local_path", "split_s3"]

#: Ends the names of temporary files (local atomic writes, write probes); no key may end with it.
TMP_SUFFIX = ".normguide-tmp"

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_ALLOWED_SCHEMES = ("file", "s3")
#: ``C:\x``, ``c:/x``, ``D:``: a Windows drive, which on POSIX would be a relative folder "C:\x".
_DRIVE_RE = re.compile(r"^[A-Za-z]:([\\/]|$)")
#: ``file:/x``, ``s3:bucket/x``, ``http:x``: a scheme without "//", which would be a relative folder.
_NEAR_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def check_uri_scheme(uri: str, *, field: str) -> None:
    """Raise ``ValueError`` naming ``field`` and ``uri`` unless it is a local path, ``file://``
    or ``s3://bucket[/prefix]``."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"{field} must be a non-empty path or URI, got {uri!r}")
    m = _SCHEME_RE.match(uri)
    if m is None:
        if _DRIVE_RE.match(uri):
            raise ValueError(f"{field}: {uri!r} is a Windows drive path; normguide reads POSIX paths, file:///absolute/path "
                             "and s3://bucket/prefix (it would otherwise become a folder of that name here)")
        if _NEAR_SCHEME_RE.match(uri):
            raise ValueError(f"{field}: {uri!r} looks like a URI but is not one normguide reads (a scheme needs '://': "
                             f"file:///absolute/path or s3://bucket/prefix); for a local folder of that name write "
                             f"'./{uri}'")
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


def check_output_root(uri: str, *, field: str = "output") -> str:
    """Return ``uri`` if it may be an output root, else raise ``ValueError`` naming ``field``.

    Beyond :func:`check_uri_scheme`: an empty or whitespace-only root, a bare scheme
    (``s3://``, ``file://``, ``file:///``) and anything that resolves to the filesystem root
    ``/`` are refused, so that no run ever writes ``/<run_id>`` by accident.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"{field} must be a non-empty directory or s3://bucket/prefix, got {uri!r}")
    if uri != uri.strip():
        raise ValueError(f"{field} must not start or end with whitespace, got {uri!r}")
    check_uri_scheme(uri, field=field)
    if not is_s3(uri):
        m = _SCHEME_RE.match(uri)
        if m is not None and not urlsplit(uri).path.strip("/"):
            raise ValueError(f"{field}: {uri!r} names no directory; expected file:///absolute/path")
        if not os.path.realpath(local_path(uri)).strip("/"):
            raise ValueError(f"{field}: {uri!r} is the filesystem root; choose a directory for the runs")
    return uri


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
    if body.endswith(TMP_SUFFIX):
        raise ValueError(f"storage key {key!r} ends with {TMP_SUFFIX!r}, reserved for temporary files")
    return key


def is_s3(uri: str) -> bool:
    """Whether ``uri`` is an ``s3://`` URI (any case of the scheme)."""
    m = _SCHEME_RE.match(uri)
    return m is not None and m.group(1).lower() == "s3"


def local_path(uri: str) -> str:
    """Absolute local path of a local path or file:// URI. A path with a ``..`` segment is
    resolved after its symlinks (``/proc/self/cwd/..`` is the parent of the working directory,
    not ``/proc/self``); others are only made absolute (abspath), so the paths a run records
    are the ones the user gave."""
    m = _SCHEME_RE.match(uri)
    if m is not None and m.group(1).lower() == "file":
        uri = urlsplit(uri).path or "/"
    path = os.path.expanduser(uri)
    if ".." in path.replace("\\", "/").split("/"):
        return os.path.realpath(path)
    return os.path.abspath(path)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    parts = urlsplit(uri)
    return parts.netloc, parts.path.strip("/")
