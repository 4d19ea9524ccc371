"""Claims in the output root's lease exclude each other wherever their concepts overlap (issue 25):
a whole run, a run of a subset (or of the whole table spelled out as ids), a fan-out shard and a
fan-out parent, on local disk and on S3. A holder that loses its claim (stopped past its expiry,
taken over) finds out at its next check; a damaged lease is refused, named.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from normguide.data.storage import LeaseDamaged, LeaseHeld, LeaseLost, Storage
from normguide.data.storage.lease import read_holders


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path, monkeypatch):
    """(storage, endpoint, env for child processes) for each backend."""
    if request.param == "local":
        return Storage.open(str(tmp_path / "run-1"), retry_seconds=10), "", None
    s3_server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=s3_server.key, AWS_SECRET_ACCESS_KEY=s3_server.secret,
               AWS_DEFAULT_REGION=s3_server.region_name)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(k, env[k])
    st = Storage.open(f"s3://{bucket}/datasets/run-1", storage_config=s3_server.storage_config(key=None, secret=None),
                      retry_seconds=10)
    return st, s3_server.endpoint_url, env


def test_overlapping_claims_exclude_each_other_and_disjoint_ones_share(backend):
    st, _, _ = backend
    whole = st.acquire_lease(owner="whole run", auto_renew=False)
    # a subset, and the whole table spelled out as ids, overlap the whole run: refused
    for ids in (["c1"], ["c1", "c2", "c3"]):
        with pytest.raises(LeaseHeld, match="whole run.*every concept of the run"):
            st.acquire_lease(owner="subset", concepts=ids, auto_renew=False)
    with pytest.raises(LeaseHeld, match="whole run"):  # a fan-out parent too
        st.acquire_lease(owner="fan-out", coordinator=True, auto_renew=False)
    whole.release()

    # disjoint subsets (shards) share the root; an overlapping one and a whole run are refused
    a = st.acquire_lease(owner="shard a", concepts=["c1", "c2"], auto_renew=False)
    b = st.acquire_lease(owner="shard b", concepts=["c3"], auto_renew=False)
    with pytest.raises(LeaseHeld, match=r"shard a.*2 concept\(s\) \(c1, c2\)"):
        st.acquire_lease(owner="subset", concepts=["c2", "c9"], auto_renew=False)
    with pytest.raises(LeaseHeld, match="shard"):
        st.acquire_lease(owner="whole run", auto_renew=False)
    assert sorted(h.label for h in read_holders(st)) == ["shard a", "shard b"]

    # a fan-out parent runs beside its shards, excludes a second parent and a whole run
    parent = st.acquire_lease(owner="fan-out", coordinator=True, auto_renew=False)
    with pytest.raises(LeaseHeld, match="fan-out.*the fan-out of the run"):
        st.acquire_lease(owner="fan-out 2", coordinator=True, auto_renew=False)
    # finalizing excludes every writer: refused while a shard is live, granted once none is
    with pytest.raises(LeaseHeld, match="shard a"):
        parent.claim_all()
    a.release()
    b.release()
    parent.claim_all()
    assert parent.claims_all and [h.label for h in read_holders(st)] == ["fan-out"]
    with pytest.raises(LeaseHeld, match="fan-out.*every concept"):
        st.acquire_lease(owner="late shard", concepts=["c7"], auto_renew=False)
    parent.release()
    assert not st.exists("_LEASE")


@pytest.mark.parametrize("field, value, named", [
    ("expires", math.nan, "'expires' is nan, not a finite number"),
    ("expires", math.inf, "'expires' is inf, not a finite number"),
    ("pid", 2**63, "'pid' is 9223372036854775808, not a process id"),
    ("owner", None, "a holder has no 'owner'"),
])
def test_a_damaged_lease_is_refused_naming_the_object_and_the_field(tmp_path, field, value, named):
    st = Storage.open(str(tmp_path / "run"))
    lease = st.acquire_lease(owner="run", auto_renew=False)
    doc = json.loads(st.read_bytes("_LEASE"))
    doc["holders"][0][field] = value
    lease.release()
    st.write_bytes("_LEASE", json.dumps(doc).encode())  # NaN and Infinity as Python's json writes them
    for attempt in (lambda: st.acquire_lease(owner="rerun"), lambda: read_holders(st)):
        with pytest.raises(LeaseDamaged) as info:
            attempt()
        assert st.uri("_LEASE") in str(info.value) and named in str(info.value)
        assert "delete it" in str(info.value)
    st.write_bytes("_LEASE", b"{not json")
    with pytest.raises(LeaseDamaged, match="not JSON"):
        st.acquire_lease(owner="rerun")


#: A holder process: claims ``concepts`` ('' = all), prints "held", then on each line of stdin
#: checks its claim and prints "ok" or "lost: <message>".
HOLDER = textwrap.dedent("""
    import sys
    from normguide.config import StorageConfig
    from normguide.data.storage import LeaseLost, Storage
    root, ttl, endpoint, concepts = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    cfg = StorageConfig(endpoint_url=endpoint, region_name="us-east-1") if endpoint else None
    st = Storage.open(root, storage_config=cfg, retry_seconds=10)
    lease = st.acquire_lease(ttl_s=ttl, owner="stopped run", concepts=concepts.split(",") if concepts else None)
    print("held", flush=True)
    for _ in sys.stdin:
        try:
            lease.check()
            print("ok", flush=True)
        except LeaseLost as exc:
            print("lost:", exc, flush=True)
    lease.release()
""")


@pytest.mark.slow  # the slow tier: a holder process
def test_a_stopped_holder_taken_over_after_a_skewed_expiry_finds_its_claim_lost(backend):
    """SIGSTOP a holder, move its expiry into the past by hand (as a skewed clock or a pause past
    the ttl would), take the root over, SIGCONT: the holder's next check says lost, naming the
    new holder; its release leaves the new holder's claim alone. A live holder checks ok."""
    st, endpoint, env = backend
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, st.root, "600", endpoint, "c1,c2"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(LeaseHeld, match="stopped run"):
            st.acquire_lease(owner="second", concepts=["c2"], auto_renew=False)
        holder.send_signal(signal.SIGSTOP)
        doc = json.loads(st.read_bytes("_LEASE"))
        doc["holders"][0]["expires"] = time.time() - 1  # the clock skew
        st.write_bytes("_LEASE", json.dumps(doc).encode())
        second = st.acquire_lease(owner="second", concepts=["c2"], auto_renew=False)
        holder.send_signal(signal.SIGCONT)
        holder.stdin.write("\n")
        holder.stdin.flush()
        answer = holder.stdout.readline().strip()
        assert answer.startswith("lost:") and "no longer ours" in answer and "second" in answer, answer
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
        assert [h.label for h in read_holders(st)] == ["second"]
        second.release()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_check_reads_the_lease_not_memory(backend):
    """Lease.check() finds a claim removed behind the holder's back at once (the renewal thread
    would only notice at its next tick)."""
    st, _, _ = backend
    lease = st.acquire_lease(owner="run", ttl_s=600)  # renewal every 200 s: not in this test
    try:
        lease.check()
        mine = read_holders(st)
        st.delete(["_LEASE"])
        with pytest.raises(LeaseLost, match="no longer ours"):
            lease.check()
        assert mine[0].owner == lease.info.owner
    finally:
        lease.release()
    assert not st.exists("_LEASE")  # a lost claim's release writes nothing
