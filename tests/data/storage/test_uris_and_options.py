"""URI schemes, key rules and the fsspec options made from a StorageConfig."""

import pytest

from normguide.config import StorageConfig
from normguide.data.storage import check_key, check_uri_scheme, storage_options_for


@pytest.mark.parametrize("uri", ["out", "./out", "../x/out", "/abs/out", "file:///abs/out", "s3://bucket", "s3://bucket/a/b/"])
def test_allowed_schemes(uri):
    check_uri_scheme(uri, field="output")


@pytest.mark.parametrize("uri", ["http://host/x", "https://host/x", "gs://bucket/x", "s3://", "file://remote/x", "", "  "])
def test_rejected_schemes_name_field_and_uri(uri):
    with pytest.raises(ValueError) as info:
        check_uri_scheme(uri, field="concepts")
    assert "concepts" in str(info.value) and repr(uri) in str(info.value)


@pytest.mark.parametrize("key", ["run.json", "images/c1/x.png", "manifest/part-c.1.parquet", ".hidden"])
def test_good_keys(key):
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "./a", "a//b", "a/", "a\\b", "a/\x00b",
                                 "a/.x.normguide-tmp"])
def test_bad_keys_are_named(key):
    with pytest.raises(ValueError) as info:
        check_key(key)
    assert repr(key) in str(info.value) or key == ""


def test_options_local_and_none():
    cfg = StorageConfig(endpoint_url="http://h:9000", key="AK", secret="SK")
    assert storage_options_for("/tmp/x", cfg) == {}
    assert storage_options_for("file:///tmp/x", cfg) == {}
    assert storage_options_for("s3://b/p", None) == {}


def test_options_s3_unwraps_secrets_and_merges_extra():
    cfg = StorageConfig(endpoint_url="http://h:9000", region_name="eu-west-1", profile="p", key="AK", secret="SK",
                        token="TK", extra={"client_kwargs": {"verify": False}, "config_kwargs": {"read_timeout": 5}})
    opts = storage_options_for("s3://b/p", cfg)
    assert opts == {
        "client_kwargs": {"endpoint_url": "http://h:9000", "region_name": "eu-west-1", "verify": False},
        "key": "AK", "secret": "SK", "token": "TK", "profile": "p", "config_kwargs": {"read_timeout": 5},
    }


def test_credentials_block_is_not_resolved_here():
    """A Prefect block is the Prefect driver's to resolve (tasks/credentials.py); the storage
    package says how to give credentials without it, and never imports prefect_aws."""
    with pytest.raises(ValueError) as info:
        storage_options_for("s3://b/p", StorageConfig(aws_credentials_block="prod", key="AK"))
    msg = str(info.value)
    assert "'prod'" in msg and "Prefect driver" in msg
    assert "storage.key" in msg and "storage.profile" in msg and "AWS environment" in msg
    assert "AK" not in msg
    # key and secret given: the block is not needed, local files never need it
    cfg = StorageConfig(aws_credentials_block="prod", key="AK", secret="SK")
    assert storage_options_for("s3://b/p", cfg) == {"key": "AK", "secret": "SK"}
    assert storage_options_for("/tmp/x", StorageConfig(aws_credentials_block="prod")) == {}


def test_storage_package_imports_no_prefect():
    import subprocess
    import sys

    code = ("import sys, normguide.data.storage as s; "
            "s.storage_options_for('s3://b/p', None); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_aws')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
