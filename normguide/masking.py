"""Keeping credentials out of everything a run shows or records: masking them in settings
(:func:`mask_credentials`, :func:`credential_paths`), finding their values (:func:`secret_values`)
and scrubbing those from messages (:func:`scrub`).

The bottom of the package (it imports nothing of normguide): the settings
(``normguide.config``), storage (``normguide.data.storage``) and the CLI all use it, so there is
one rule for what counts as a secret (:func:`looks_secret`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "credential_paths", "looks_secret", "mask_credentials", "scrub", "secret_values",
           "secrets_refused", "strip_userinfo"]

#: What a masked credential is replaced with.
MASK = "**********"

#: Substrings of a key (any case) that name a credential.
_SECRET_WORDS = ("secret", "token", "password", "passwd", "key", "credential")


def looks_secret(key: Any) -> bool:
    """Whether a dict key names a credential (``aws_secret_access_key``, ``password``, ``Token``...)."""
    k = str(key).lower()
    return any(w in k for w in _SECRET_WORDS)


def strip_userinfo(text: str) -> str:
    """``text`` without the ``user:password@`` of a URL (unchanged if it is not one)."""
    if "@" not in text or "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        if not (parts.username or parts.password):
            return text
    except ValueError:
        return text
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def mask_credentials(obj: Any, *, keys: bool = True) -> Any:
    """A copy of ``obj`` (dicts, lists, strings) with URL userinfo stripped from every string
    and, with ``keys``, the value of every key that names a credential masked, at any depth."""
    if isinstance(obj, dict):
        return {k: (MASK if keys and looks_secret(k) and v not in (None, "", {}, []) else mask_credentials(v, keys=keys))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mask_credentials(v, keys=keys) for v in obj]
    if isinstance(obj, str):
        return strip_userinfo(obj)
    return obj


def credential_paths(obj: Any, prefix: str, *, keys: bool = True) -> list[str]:
    """Dotted paths under ``prefix`` of the credentials ``obj`` holds: URLs carrying
    ``user:password@`` and, with ``keys``, non-empty values of keys that name one (any depth)."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if keys and looks_secret(k) and v not in (None, "", {}, []):
                found.append(path)
            else:
                found.extend(credential_paths(v, path, keys=keys))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found.extend(credential_paths(v, f"{prefix}[{i}]", keys=keys))
    elif isinstance(obj, str) and strip_userinfo(obj) != obj:
        found.append(f"{prefix} (user:password@ in the URL)")
    return found


def _secret_leaves(obj: Any, under_secret: bool = False) -> list[str]:
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in _secret_leaves(v, under_secret or looks_secret(k))]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _secret_leaves(v, under_secret)]
    if isinstance(obj, str) and obj:
        if under_secret:
            return [obj]
        try:
            parts = urlsplit(obj) if "@" in obj and "://" in obj else None
        except ValueError:
            parts = None
        if parts is not None and (parts.username or parts.password):
            pair = f"{parts.username or ''}:{parts.password}" if parts.password else None
            # a bare password is scrubbed only when long enough not to mangle the message
            return [p for p in (pair, parts.password if len(parts.password or "") >= 4 else None) if p]
    return []


def secret_values(options: dict[str, Any]) -> list[str]:
    """The secret strings in ``options``, to scrub from messages: the values of every key that
    names a credential (key, secret, token, ``client_kwargs.aws_secret_access_key``, ... at any
    depth) and the passwords of URLs carrying ``user:password@``; longest first."""
    return sorted(set(_secret_leaves(options)), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty value of ``secrets`` replaced by asterisks."""
    for s in secrets:
        if s:
            text = text.replace(s, MASK)
    return text


def secrets_refused(fields: list[str], where: str) -> str:
    """The error for credentials found in a config that is about to travel as ``where``."""
    return (
        f"config holds credentials in {', '.join(fields)}: {where} are stored by the Prefect API in plain "
        "text, so credentials must not be part of them; give them through the environment "
        "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), a profile (storage.profile / AWS_PROFILE) or a "
        "prefect-aws block (storage.aws_credentials_block), and put no user:password@ in URLs; "
        "`normguide run --no-prefect` accepts them, since it stores no parameters"
    )
