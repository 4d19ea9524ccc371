"""fsspec options (endpoint, credentials) for an S3 URI, and keeping their secrets out of messages.

Secrets. Credentials come from :class:`normguide.config.StorageConfig` (``key``/``secret``/
``token``, ``profile``) or boto's own chain (environment, ``~/.aws``, instance roles), and
appear in no message raised by this package: messages name the endpoint (:func:`endpoint_of`,
without any ``user:password@``), the bucket and the key, and any server text is scrubbed of
the configured secret values (:func:`scrub`).

Prefect blocks are not read here. A ``StorageConfig.aws_credentials_block`` is resolved by the
Prefect driver (``tasks/credentials.py``) into a copy of the config with the block's values
filled in; a config that still names a block and holds no key/secret is refused with a
``ValueError`` that says how to give credentials without Prefect.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from normguide.data.storage.uris import is_s3

if TYPE_CHECKING:
    from normguide.config import StorageConfig

__all__ = [
    "MASK", "credential_paths", "endpoint_of", "looks_secret", "mask_credentials", "scrub", "secret_values",
    "storage_options_for", "strip_userinfo",
]

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


def storage_options_for(uri: str, storage_config: StorageConfig | None) -> dict[str, Any]:
    """fsspec keyword arguments for ``uri``'s scheme, from the run's storage configuration.

    Local paths and file:// get ``{}``. For s3:// the result suits ``s3fs.S3FileSystem`` and
    ``pandas.read_parquet(storage_options=...)``: ``client_kwargs.endpoint_url`` and
    ``client_kwargs.region_name``, ``key``/``secret``/``token`` (unwrapped secrets),
    ``profile``, then ``storage_config.extra`` merged on top (dicts merged one level deep).
    What the config does not set is left to boto's own chain (environment, ~/.aws, instance
    roles).

    Raises:
        ValueError: ``aws_credentials_block`` is set and the config holds no key/secret: the
            block is a Prefect object, resolved by the Prefect driver before storage is used.
    """
    if not is_s3(uri):
        return {}
    if storage_config is None:
        return {}
    cfg = storage_config
    key = cfg.key.get_secret_value() if cfg.key is not None else None
    secret = cfg.secret.get_secret_value() if cfg.secret is not None else None
    token = cfg.token.get_secret_value() if cfg.token is not None else None
    if cfg.aws_credentials_block and not (key and secret):
        raise ValueError(
            f"storage.aws_credentials_block={cfg.aws_credentials_block!r} names a Prefect block, which "
            "the Prefect driver resolves (tasks/credentials.py) before any storage call; without Prefect, "
            "unset it and give credentials as storage.key/storage.secret, storage.profile, or the AWS "
            "environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE)"
        )
    opts: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = {}
    if cfg.endpoint_url:
        client_kwargs["endpoint_url"] = cfg.endpoint_url
    if cfg.region_name:
        client_kwargs["region_name"] = cfg.region_name
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    if key:
        opts["key"] = key
    if secret:
        opts["secret"] = secret
    if token:
        opts["token"] = token
    if cfg.profile:
        opts["profile"] = cfg.profile
    for name, value in cfg.extra.items():
        if isinstance(value, dict) and isinstance(opts.get(name), dict):
            opts[name] = {**opts[name], **value}
        else:
            opts[name] = value
    return opts


def secret_values(options: dict[str, Any]) -> list[str]:
    """The secret strings in ``options``, to scrub from messages: the values of every key that
    names a credential (key, secret, token, ``client_kwargs.aws_secret_access_key``, ... at any
    depth) and the passwords of URLs carrying ``user:password@``; longest first."""
    return sorted(set(_secret_leaves(options)), key=len, reverse=True)


def endpoint_of(options: dict[str, Any]) -> str:
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


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty value of ``secrets`` replaced by asterisks."""
    for s in secrets:
        if s:
            text = text.replace(s, "**********")
    return text
