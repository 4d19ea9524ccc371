"""S3Storage and s3:// inputs against a real S3 endpoint (moto's server, see tests/conftest.py)."""

import traceback

import pytest

from normguide.data.storage import Storage, StorageError, exists_uri, read_bytes


def _closed_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_roundtrip_exists_and_inputs(s3_server, s3_bucket):
    cfg = s3_server.storage_config()
    st = Storage.open(f"s3://{s3_bucket}/datasets/run-1/", storage_config=cfg)
    assert st.root == f"s3://{s3_bucket}/datasets/run-1"
    st.check_writable()
    uri = st.write_bytes("images/c1/x.png", b"png")
    assert uri == f"s3://{s3_bucket}/datasets/run-1/images/c1/x.png"
    assert st.read_bytes("images/c1/x.png") == b"png"
    assert st.exists("images/c1/x.png") and not st.exists("images/c1/y.png") and not st.exists("images/c1")
    assert read_bytes(uri, storage_config=cfg) == b"png"
    assert exists_uri(uri, storage_config=cfg) and not exists_uri(uri + ".no", storage_config=cfg)
    assert exists_uri(f"s3://{s3_bucket}", storage_config=cfg)
    assert st.list("") == ["images/c1/x.png"]  # the write check left no probe behind
    with pytest.raises(FileNotFoundError, match="images/c1/y.png"):
        st.read_bytes("images/c1/y.png")


def test_write_many_list_existing(s3_server, s3_bucket):
    st = Storage.open(f"s3://{s3_bucket}", storage_config=s3_server.storage_config())
    uris = st.write_many(((f"images/c{i % 3}/{i:04d}.png", i.to_bytes(4, "big")) for i in range(300)), batch_size=64)
    assert len(uris) == 300 and uris[4] == f"s3://{s3_bucket}/images/c1/0004.png"
    st.write_bytes("run.json", b"{}")
    assert st.read_bytes("images/c2/0299.png") == (299).to_bytes(4, "big")
    keys = st.list("images/c0")
    assert keys == sorted(keys) and len(keys) == 100 and keys[0] == "images/c0/0000.png"
    assert len(st.list("")) == 301 and st.list("nothing") == [] and st.list("images/c") == []
    asked = ["images/c0/0000.png", "images/c0/0001.png", "images/c1/0001.png", "run.json", "missing/x", "_SUCCESS"]
    assert st.existing(asked) == {"images/c0/0000.png", "images/c1/0001.png", "run.json"}
    st.delete(st.list("images/c0") + ["run.json", "missing/x"])  # absent keys are not an error
    assert st.list("images/c0") == [] and not st.exists("run.json") and len(st.list("")) == 200
    st.delete([])


def test_missing_bucket_and_object(s3_server, s3_bucket):
    cfg = s3_server.storage_config()
    with pytest.raises(FileNotFoundError) as info:
        read_bytes("s3://no-such-bucket-ng/concepts.parquet", storage_config=cfg)
    msg = str(info.value)
    assert "bucket 'no-such-bucket-ng' does not exist" in msg and s3_server.endpoint_url in msg
    with pytest.raises(FileNotFoundError) as info:
        read_bytes(f"s3://{s3_bucket}/refs/a.png", storage_config=cfg)
    assert f"s3://{s3_bucket}/refs/a.png" in str(info.value) and "object not found" in str(info.value)
    st = Storage.open("s3://no-such-bucket-ng/run", storage_config=cfg, retry_seconds=1)
    with pytest.raises(ValueError) as info:
        st.check_writable()
    assert "bucket does not exist" in str(info.value) and s3_server.endpoint_url in str(info.value)
    with pytest.raises(StorageError, match="no-such-bucket-ng"):
        st.write_bytes("run.json", b"{}")


def test_wrong_endpoint(s3_server, s3_bucket):
    cfg = s3_server.storage_config(endpoint_url=_closed_endpoint())
    with pytest.raises(ValueError) as info:
        read_bytes(f"s3://{s3_bucket}/concepts.parquet", storage_config=cfg, retry_seconds=0.3)
    assert "cannot reach S3 endpoint " + cfg.endpoint_url in str(info.value)
    assert f"s3://{s3_bucket}/concepts.parquet" in str(info.value)
    with pytest.raises(ValueError) as info:
        Storage.open(f"s3://{s3_bucket}/run", storage_config=cfg, retry_seconds=0.3).check_writable()
    assert "endpoint unreachable" in str(info.value) and cfg.endpoint_url in str(info.value)
    assert repr(s3_bucket) in str(info.value)


@pytest.mark.parametrize("bad", ["secret", "key"])
def test_bad_credentials_are_named_and_never_shown(s3_server, s3_bucket, bad):
    good = s3_server.storage_config()
    Storage.open(f"s3://{s3_bucket}", storage_config=good).write_bytes("concepts.parquet", b"x")
    wrong = {"secret": "wR0ngSecretValue/1234567890abcdefghijklmn", "key": "AKIAWRONGKEYID000000"}[bad]
    cfg = s3_server.storage_config(**{bad: wrong})
    errors = []
    for call in (
        lambda: read_bytes(f"s3://{s3_bucket}/concepts.parquet", storage_config=cfg),
        lambda: exists_uri(f"s3://{s3_bucket}/concepts.parquet", storage_config=cfg),
        lambda: Storage.open(f"s3://{s3_bucket}/run", storage_config=cfg).check_writable(),
        lambda: Storage.open(f"s3://{s3_bucket}/run", storage_config=cfg).write_bytes("run.json", b"{}"),
        lambda: Storage.open(f"s3://{s3_bucket}/run", storage_config=cfg).read_bytes("run.json"),
    ):
        with pytest.raises((ValueError, StorageError)) as info:
            call()
        errors.append(info.value)
    for exc in errors:
        text = _full_text(exc)
        assert "rejected the credentials" in str(exc) and s3_server.endpoint_url in str(exc)
        assert wrong not in text and s3_server.secret not in text and s3_server.key not in str(exc)


def test_object_reads_are_one_get(s3_server, s3_bucket, caplog):
    """Reads send one GET and nothing before it (a HEAD's 403/404 has no body to tell a wrong
    key from a wrong secret); s3fs logs every request it sends as 'CALL: <method>'."""
    cfg = s3_server.storage_config()
    st = Storage.open(f"s3://{s3_bucket}/run", storage_config=cfg)
    st.write_bytes("a.bin", b"a")
    for read in (lambda: st.read_bytes("a.bin"), lambda: read_bytes(st.uri("a.bin"), storage_config=cfg)):
        caplog.clear()
        with caplog.at_level("DEBUG", logger="s3fs"):
            assert read() == b"a"
        calls = [r.getMessage().split(" - ")[0] for r in caplog.records if r.getMessage().startswith("CALL: ")]
        assert calls == ["CALL: get_object"]
