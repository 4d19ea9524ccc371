"""fsspec options (endpoint, credentials) for an S3 URI; their secrets are kept out of messages
with :mod:`normguide.masking`.

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

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from normguide.data.storage.uris import is_s3
from normguide.masking import (  # noqa: F401 - re-exported: storage's callers name them here
    MASK,
    credential_paths,
    looks_secret,
    mask_credentials,
    scrub,
    secret_values,
    strip_userinfo,
)

if TYPE_CHECKING:
    from normguide.config import StorageConfig

__all__ = [
    "MASK", "credential_paths", "endpoint_of", "looks_secret", "mask_credentials", "scrub", "secret_values",
    "storage_options_for", "strip_userinfo",
]

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
