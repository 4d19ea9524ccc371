"""The S3 endpoint goes away mid-run; a Storage is used across os.fork."""

import multiprocessing
import threading
import time

import pytest

from normguide.data.storage import Storage, StorageError

pytestmark = pytest.mark.slow  # the slow tier (pyproject.toml)


def _images(n, on_item=None):
    for i in range(n):
        if on_item is not None:
            on_item(i)
        yield f"images/c1/{i:04d}.png", b"img-%d" % i


def test_endpoint_restarts_mid_write_many(s3_server, s3_bucket):
    st = Storage.open(f"s3://{s3_bucket}/run", storage_config=s3_server.storage_config(), retry_seconds=20)
    st.write_bytes("run.json", b"{}")  # a warm connection pool, so stale connections are exercised too
    restart = threading.Timer(1.0, s3_server.start)

    def outage(i):
        if i == 40:  # drawn while batch 3 is being filled: batches 1-2 are written
            s3_server.stop()
            restart.start()

    t0 = time.monotonic()
    try:
        uris = st.write_many(_images(100, outage), batch_size=20)
    finally:
        restart.join()
        s3_server.start()
    assert time.monotonic() - t0 >= 1.0  # it did wait for the endpoint to come back
    assert len(uris) == 100
    assert st.list("images/c1") == [f"images/c1/{i:04d}.png" for i in range(100)]
    assert st.read_bytes("images/c1/0040.png") == b"img-40" and st.read_bytes("images/c1/0099.png") == b"img-99"


def test_endpoint_stays_down(s3_server, s3_bucket):
    cfg = s3_server.storage_config()
    st = Storage.open(f"s3://{s3_bucket}/run", storage_config=cfg, retry_seconds=1.0)

    def outage(i):
        if i == 40:
            s3_server.stop()

    try:
        with pytest.raises(StorageError) as info:
            st.write_many(_images(100, outage), batch_size=20)
    finally:
        s3_server.start()
    msg = str(info.value)
    assert s3_server.endpoint_url in msg and "cannot reach" in msg
    assert f"s3://{s3_bucket}/run/images/c1/0040.png" in msg
    assert s3_server.secret not in msg and s3_server.key not in msg
    # what was written before the outage is intact; nothing of the failed batch exists
    assert st.list("images/c1") == [f"images/c1/{i:04d}.png" for i in range(40)]
    assert all(st.read_bytes(f"images/c1/{i:04d}.png") == b"img-%d" % i for i in range(40))


def _child_writes(st, key, conn):
    try:
        st.write_many([(key, b"from child"), (key + ".2", b"second")])
        conn.send(("ok", st.read_bytes(key)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", repr(exc)))
    finally:
        conn.close()


def test_storage_made_before_fork_works_in_child(s3_server, s3_bucket):
    st = Storage.open(f"s3://{s3_bucket}/run", storage_config=s3_server.storage_config(), retry_seconds=5)
    st.write_bytes("parent-before.txt", b"p")  # the parent's event loop and connections are live
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_writes, args=(st, "child.txt", send))
    proc.start()
    send.close()
    assert recv.poll(30), "child did not answer"
    status, value = recv.recv()
    proc.join(10)
    assert (status, value) == ("ok", b"from child") and proc.exitcode == 0
    # the parent's filesystem is untouched by the child
    st.write_bytes("parent-after.txt", b"q")
    assert st.list("") == ["child.txt", "child.txt.2", "parent-after.txt", "parent-before.txt"]
