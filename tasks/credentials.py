"""Prefect-side credentials: a prefect-aws ``AwsCredentials`` block turned into a StorageConfig.

``normguide`` itself reads no Prefect block: a :class:`~normguide.config.StorageConfig` that
names ``aws_credentials_block`` and holds no key/secret is refused there. The Prefect driver
calls :func:`resolve_storage_config` inside the worker process, just before it opens storage,
and hands the resolved copy to the library.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from normguide.config import StorageConfig

__all__ = ["resolve_storage_config"]


def resolve_storage_config(config: StorageConfig) -> StorageConfig:
    """``config`` with its ``aws_credentials_block`` resolved: a copy whose key, secret, token,
    profile, region and endpoint are filled from the prefect-aws ``AwsCredentials`` block where
    the config does not set them (the config's own fields win), and whose
    ``aws_credentials_block`` is ``None``. A config that names no block is returned as it is.

    The copy holds the block's secrets. It lives only in the worker process that called this:
    never return it from a task, never pass it as a task or flow parameter (Prefect would
    persist, log or display it). Pass the unresolved config (the block's name) between tasks
    and resolve it again in each task that opens storage.

    Raises:
        ValueError: prefect-aws is not installed, or no AwsCredentials block of that name
            exists (or it cannot be loaded).
    """
    name = config.aws_credentials_block
    if not name:
        return config
    block = _load_aws_credentials_block(name)
    update: dict[str, Any] = {"aws_credentials_block": None}
    if not (config.key is not None and config.key.get_secret_value()):
        if key := _plain(getattr(block, "aws_access_key_id", None)):
            update["key"] = SecretStr(key)
    if config.secret is None and (secret := _plain(getattr(block, "aws_secret_access_key", None))) is not None:
        update["secret"] = SecretStr(secret)
    if config.token is None and (token := _plain(getattr(block, "aws_session_token", None))) is not None:
        update["token"] = SecretStr(token)
    if not config.profile and (profile := getattr(block, "profile_name", None)):
        update["profile"] = profile
    if not config.region_name and (region := getattr(block, "region_name", None)):
        update["region_name"] = region
    params = getattr(block, "aws_client_parameters", None)
    if not config.endpoint_url and (endpoint := getattr(params, "endpoint_url", None)):
        update["endpoint_url"] = str(endpoint)
    return config.model_copy(update=update)


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


def _plain(value: Any) -> Any:
    """A block field's value, unwrapped if it is a SecretStr."""
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value
