"""tasks/credentials.py (normguide.tasks.credentials): a prefect-aws AwsCredentials block resolved into a StorageConfig copy."""

import sys
import types

import pytest
from pydantic import SecretStr

from normguide.config import StorageConfig
from normguide.data.storage import Storage, read_bytes, storage_options_for
from normguide.tasks.credentials import resolve_storage_config


class _Params:
    def __init__(self, endpoint_url=None):
        self.endpoint_url = endpoint_url


class _Block:
    def __init__(self, *, key=None, secret=None, token=None, profile=None, region=None, endpoint=None):
        self.aws_access_key_id = key
        self.aws_secret_access_key = SecretStr(secret) if secret is not None else None
        self.aws_session_token = token
        self.profile_name = profile
        self.region_name = region
        self.aws_client_parameters = _Params(endpoint)


class _Blocks(dict):
    """Blocks by name, and the (name, kwargs) of every load."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, dict]] = []


@pytest.fixture
def blocks(monkeypatch):
    """A stand-in ``prefect_aws`` module whose AwsCredentials.load serves these blocks."""
    stored = _Blocks()
    calls = stored.calls

    class AwsCredentials:
        @classmethod
        def load(cls, name, **kwargs):
            calls.append((name, kwargs))
            if name not in stored:
                raise ValueError(f"Unable to find block document named {name} for block type aws-credentials")
            return stored[name]

    monkeypatch.setitem(sys.modules, "prefect_aws", types.SimpleNamespace(AwsCredentials=AwsCredentials))
    return stored


def test_no_block_is_returned_as_is():
    cfg = StorageConfig(endpoint_url="http://h:9000", key="AK", secret="SK")
    assert resolve_storage_config(cfg) is cfg


def test_without_prefect_aws_says_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "prefect_aws", None)  # import prefect_aws -> ImportError
    with pytest.raises(ValueError) as info:
        resolve_storage_config(StorageConfig(aws_credentials_block="prod"))
    msg = str(info.value)
    assert "prefect-aws" in msg and "'prod'" in msg and "storage.key" in msg


def test_missing_block_is_named(blocks):
    with pytest.raises(ValueError) as info:
        resolve_storage_config(StorageConfig(aws_credentials_block="nope"))
    assert "AwsCredentials block 'nope'" in str(info.value)


def test_block_fills_what_the_config_leaves_unset(blocks):
    blocks["prod"] = _Block(key="BK", secret="BS", token="BT", profile="bp", region="eu-west-1",
                            endpoint="http://block:9000")
    cfg = StorageConfig(aws_credentials_block="prod", retry_seconds=5, extra={"use_ssl": False})
    out = resolve_storage_config(cfg)
    assert blocks.calls == [("prod", {"_sync": True})]
    assert out.aws_credentials_block is None and cfg.aws_credentials_block == "prod"  # a copy
    assert out.retry_seconds == 5 and out.extra == {"use_ssl": False}
    assert storage_options_for("s3://b/p", out) == {
        "client_kwargs": {"endpoint_url": "http://block:9000", "region_name": "eu-west-1"},
        "key": "BK", "secret": "BS", "token": "BT", "profile": "bp", "use_ssl": False,
    }
    assert isinstance(out.secret, SecretStr) and "BS" not in repr(out) and "BT" not in repr(out)


def test_config_fields_win_over_the_block(blocks):
    blocks["prod"] = _Block(key="BK", secret="BS", token="BT", profile="bp", region="eu-west-1",
                            endpoint="http://block:9000")
    cfg = StorageConfig(aws_credentials_block="prod", key="AK", secret="SK", token="TK", profile="p",
                        region_name="us-east-2", endpoint_url="http://cfg:9000")
    out = resolve_storage_config(cfg)
    assert storage_options_for("s3://b/p", out) == {
        "client_kwargs": {"endpoint_url": "http://cfg:9000", "region_name": "us-east-2"},
        "key": "AK", "secret": "SK", "token": "TK", "profile": "p",
    }
    # a block with a profile only: no key/secret is made up
    blocks["profile-only"] = _Block(profile="bp")
    out = resolve_storage_config(StorageConfig(aws_credentials_block="profile-only"))
    assert storage_options_for("s3://b/p", out) == {"profile": "bp"}


def test_resolved_block_reaches_s3(blocks, s3_server, s3_bucket):
    blocks["moto"] = _Block(key=s3_server.key, secret=s3_server.secret, region=s3_server.region_name,
                            endpoint=s3_server.endpoint_url)
    cfg = StorageConfig(aws_credentials_block="moto")
    with pytest.raises(ValueError, match="Prefect driver"):
        Storage.open(f"s3://{s3_bucket}/run", storage_config=cfg)
    resolved = resolve_storage_config(cfg)
    st = Storage.open(f"s3://{s3_bucket}/run", storage_config=resolved, retry_seconds=5)
    st.check_writable()
    uri = st.write_bytes("run.json", b"{}")
    assert read_bytes(uri, storage_config=resolved) == b"{}"
