"""The output root's lease: one live run at a time, in local and S3 storage alike (issue 12).

A second run finds the lease held and gets a LeaseHeld naming the root, the holder and the
expiry; a live holder keeps it by renewing; a crashed holder's lease expires and is taken over;
of many runs that start together exactly one gets it. Holders run in their own processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from normguide.data.storage import LeaseHeld, LeaseLost, Storage
from normguide.data.storage.lease import read_holders

#: A holder process: takes the lease, prints "held <pid>", keeps it (renewing) until killed or
#: until stdin closes, then releases it. argv: root, ttl_s, endpoint ('' for local), label.
HOLDER = textwrap.dedent("""
    import sys
    from normguide.config import StorageConfig
    from normguide.data.storage import LeaseHeld, Storage
    root, ttl, endpoint, label = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    cfg = StorageConfig(endpoint_url=endpoint, region_name="us-east-1") if endpoint else None
    st = Storage.open(root, storage_config=cfg, retry_seconds=10)
    try:
        lease = st.acquire_lease(ttl_s=ttl, owner=label)
    except LeaseHeld:
        print("refused", flush=True)
        sys.exit(3)
    print("held", flush=True)
    sys.stdin.read()
    lease.release()
    print("released", flush=True)
""")


def _start_holder(root: str, ttl: float, endpoint: str = "", label: str = "run-child", env=None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, root, str(ttl), endpoint, label],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _s3_env(s3_server) -> dict[str, str]:
    return dict(os.environ, AWS_ACCESS_KEY_ID=s3_server.key, AWS_SECRET_ACCESS_KEY=s3_server.secret,
                AWS_DEFAULT_REGION=s3_server.region_name)


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path, monkeypatch):
    """(root, storage opener, endpoint, env for holder processes) for each backend."""
    if request.param == "local":
        root = str(tmp_path / "run-1")
        return root, lambda **kw: Storage.open(root, **kw), "", None
    s3_server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    root = f"s3://{bucket}/datasets/run-1"
    env = _s3_env(s3_server)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(k, env[k])
    cfg = s3_server.storage_config(key=None, secret=None)
    return root, lambda **kw: Storage.open(root, storage_config=cfg, **kw), s3_server.endpoint_url, env


@pytest.mark.slow  # the slow tier (pyproject.toml): holder processes
def test_second_run_is_refused_while_the_first_lives_then_takes_over_after_a_crash(backend):
    root, open_storage, endpoint, env = backend
    st = open_storage(retry_seconds=10)
    ttl = 3.0
    holder = _start_holder(root, ttl, endpoint, env=env)
    try:
        with pytest.raises(LeaseHeld) as info:
            st.acquire_lease(ttl_s=ttl, owner="run-parent")
        msg = str(info.value)
        assert isinstance(info.value, ValueError)
        assert root in msg and f"pid {holder.pid}" in msg and "run-child" in msg
        assert "expires" in msg and "started" in msg and st.uri("_LEASE") in msg
        assert info.value.info.pid == holder.pid
        # the holder renews: well past one ttl it still holds the lease
        time.sleep(ttl * 1.5)
        with pytest.raises(LeaseHeld):
            st.acquire_lease(ttl_s=ttl)
        # the holder crashes (no release): on this host its pid is gone, so its lease is taken
        # over at once, without waiting for it to expire (wait_s=0: no waiting allowed)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        (stale,) = read_holders(st)
        assert stale.pid == holder.pid
        lease = st.acquire_lease(ttl_s=ttl, owner="run-parent")
    finally:
        if holder.poll() is None:
            holder.kill()
    with lease:
        assert [h.label for h in read_holders(st)] == ["run-parent"]
        assert lease.info.pid == os.getpid()
    assert not st.exists("_LEASE")  # released on leaving the with block


@pytest.mark.slow  # the slow tier (pyproject.toml): holder processes
def test_released_lease_is_free_and_waiting_acquire_gets_it(backend):
    root, open_storage, endpoint, env = backend
    st = open_storage(retry_seconds=10)
    holder = _start_holder(root, 30.0, endpoint, env=env)
    try:
        t0 = time.monotonic()
        # the holder lets go after ~1 s; a waiting acquire gets the lease then, not after the ttl
        import threading

        threading.Timer(1.0, holder.stdin.close).start()
        lease = st.acquire_lease(ttl_s=30.0, wait_s=20.0)
        assert time.monotonic() - t0 < 20.0
        assert holder.wait(timeout=10) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    lease.release()
    lease.release()  # idempotent
    assert not st.exists("_LEASE")


def test_taken_over_lease_is_lost_and_release_leaves_the_new_holder_alone(backend):
    _root, open_storage, _endpoint, _env = backend
    st = open_storage(retry_seconds=10)
    first = st.acquire_lease(ttl_s=0.5, auto_renew=False)  # e.g. a run frozen past its expiry
    time.sleep(0.7)
    second = st.acquire_lease(ttl_s=30.0, owner="run-2")
    with pytest.raises(LeaseLost, match="no longer ours"):
        first.renew()
    assert first.lost
    first.release()  # must not delete run-2's lease
    assert [h.label for h in read_holders(st)] == ["run-2"]
    second.release()
    assert not st.exists("_LEASE")


def test_renewal_thread_notices_a_takeover(backend):
    _root, open_storage, _endpoint, _env = backend
    st = open_storage(retry_seconds=10)
    lease = st.acquire_lease(ttl_s=1.5)
    try:
        # someone deletes the lease behind the holder's back (an operator, a buggy cleanup)
        st._lease_delete("_LEASE", lease._version)
        deadline = time.monotonic() + 10
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lease.lost
        with pytest.raises(LeaseLost):
            lease.check()
    finally:
        lease.release()


_RACER = textwrap.dedent("""
    import sys, time
    from normguide.data.storage import LeaseHeld, Storage
    root, start = sys.argv[1], float(sys.argv[2])
    st = Storage.open(root)
    time.sleep(max(0.0, start - time.time()))
    try:
        lease = st.acquire_lease(ttl_s=30, auto_renew=False)
    except LeaseHeld:
        print("refused", flush=True)
    else:
        print("held", flush=True)
""")


@pytest.mark.slow  # the slow tier (pyproject.toml): holder processes
@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "expired"])
def test_of_racing_processes_exactly_one_gets_the_lease_local(tmp_path, stale):
    root = str(tmp_path / "run")
    if stale:  # all of them race to take over the same crashed run's lease
        st = Storage.open(root)
        st.acquire_lease(ttl_s=0.2, auto_renew=False)
        time.sleep(0.3)
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, root, str(start)], stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(outs) == ["held"] + ["refused"] * 5, outs


def test_a_killed_holder_on_this_host_is_taken_over_at_once(tmp_path):
    """A run killed with SIGKILL leaves its lease; on the same host the dead pid is seen and the
    rerun need not wait for the expiry."""
    import subprocess
    import sys

    from normguide.data.storage import Storage

    store = Storage.open(str(tmp_path / "root"))
    code = ("import sys, time; from normguide.data.storage import Storage; "
            "s = Storage.open(sys.argv[1]); s.acquire_lease(owner='killed run', ttl_s=600); "
            "print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, store.root], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from normguide.data.storage import LeaseHeld

        with pytest.raises(LeaseHeld, match="killed run"):  # alive: refused
            store.acquire_lease(owner="second")
        holder.kill()
        holder.wait(timeout=30)
        lease = store.acquire_lease(owner="rerun")  # dead: taken over without waiting 600 s
        lease.release()
    finally:
        if holder.poll() is None:
            holder.kill()
