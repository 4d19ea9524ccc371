"""A stalled S3 endpoint (it accepts connections and never answers) follows storage.retry_seconds
(issue 12): request timeouts derive from the budget, a stall is retried like a refused
connection, a stall longer than the budget fails soon after it with the endpoint named, and a
short one is ridden out. And S3 inputs over the size limit are refused before their body is read.

The stalls come from tests/tcp_front.py (STALL_S) in front of the session's moto server. Bounds
on elapsed time are generous: the point is "not botocore's 60 s read timeout".
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from normguide.data.storage import Storage, StorageError, read_bytes
from normguide.data.storage import inputs as storage_inputs
from normguide.data.storage.s3 import request_timeouts
from tests.conftest import free_port

_FRONT = Path(__file__).resolve().parents[2] / "tcp_front.py"


@pytest.fixture
def stalled_front(s3_server):
    """start(stall_s) -> endpoint URL of a front to the moto server that stalls every
    connection accepted in its first ``stall_s`` seconds (``inf``: for ever)."""
    procs: list[subprocess.Popen] = []

    def start(stall_s: float) -> str:
        port = free_port()
        proc = subprocess.Popen([sys.executable, str(_FRONT), str(port), str(s3_server.backend_port), "0", str(stall_s)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(proc)
        assert proc.stdout.readline().strip() == b"ready"
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        p.kill()
        p.wait(timeout=10)


def test_timeouts_follow_the_budget():
    assert request_timeouts(10) == pytest.approx({"connect_timeout": 10 / 6, "read_timeout": 10 / 3})
    assert request_timeouts(60) == {"connect_timeout": 10.0, "read_timeout": 20.0}
    assert request_timeouts(0.5) == {"connect_timeout": 1.0, "read_timeout": 2.0}
    assert request_timeouts(3600)["read_timeout"] == 60.0


@pytest.mark.slow  # the slow tier (pyproject.toml): subprocess, waits out timeouts
def test_stall_longer_than_the_budget_fails_soon_after_it_naming_the_endpoint(s3_server, s3_bucket, stalled_front):
    endpoint = stalled_front(float("inf"))
    budget = 5.0
    st = Storage.open(f"s3://{s3_bucket}/run", storage_config=s3_server.storage_config(endpoint_url=endpoint),
                      retry_seconds=budget)
    for call in (lambda: st.read_bytes("run.json"), lambda: st.write_bytes("run.json", b"{}"),
                 lambda: st.exists("run.json")):
        t0 = time.monotonic()
        with pytest.raises(StorageError) as info:
            call()
        elapsed = time.monotonic() - t0
        # retried (at least two timed-out attempts), given up within budget + one read timeout
        # (2 s here) in theory; on main it waited botocore's 60 s (a put: for ever)
        assert 2 * request_timeouts(budget)["read_timeout"] <= elapsed < 3 * budget, elapsed
        msg = str(info.value)
        assert endpoint in msg and "did not answer in time" in msg and f"s3://{s3_bucket}/run/run.json" in msg
        assert s3_server.secret not in msg


@pytest.mark.slow  # the slow tier (pyproject.toml): subprocess, waits out timeouts
def test_stall_on_input_read_fails_within_the_input_budget(s3_server, s3_bucket, stalled_front):
    endpoint = stalled_front(float("inf"))
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="did not answer in time") as info:
        read_bytes(f"s3://{s3_bucket}/t.parquet", storage_config=s3_server.storage_config(endpoint_url=endpoint),
                   retry_seconds=4)
    assert time.monotonic() - t0 < 12
    assert endpoint in str(info.value)


@pytest.mark.slow  # the slow tier (pyproject.toml): subprocess, waits out timeouts
def test_short_stall_is_retried_and_succeeds(s3_server, s3_bucket, stalled_front):
    s3_server.client().put_object(Bucket=s3_bucket, Key="run/run.json", Body=b'{"a": 1}')
    endpoint = stalled_front(2.5)  # the first ~2.5 s: connections accepted, never answered
    st = Storage.open(f"s3://{s3_bucket}/run", storage_config=s3_server.storage_config(endpoint_url=endpoint),
                      retry_seconds=15)  # read timeout 5 s: the first attempt stalls, a retry gets through
    t0 = time.monotonic()
    assert st.read_bytes("run.json") == b'{"a": 1}'
    assert 2.5 <= time.monotonic() - t0 < 15
    st.write_bytes("images/c/0.png", b"png")
    assert s3_server.client().get_object(Bucket=s3_bucket, Key="run/images/c/0.png")["Body"].read() == b"png"


def test_s3_input_over_the_size_limit_is_refused_before_reading(s3_server, s3_bucket, monkeypatch):
    monkeypatch.setattr(storage_inputs, "MAX_INPUT_BYTES", 1000)
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="refs/big.png", Body=b"x" * 5000)
    client.put_object(Bucket=s3_bucket, Key="refs/small.png", Body=b"x" * 1000)
    cfg = s3_server.storage_config()
    with pytest.raises(ValueError) as info:
        read_bytes(f"s3://{s3_bucket}/refs/big.png", storage_config=cfg)
    msg = str(info.value)
    assert f"s3://{s3_bucket}/refs/big.png" in msg and "5000 bytes" in msg and "limit of 1000 bytes" in msg
    assert read_bytes(f"s3://{s3_bucket}/refs/small.png", storage_config=cfg) == b"x" * 1000
