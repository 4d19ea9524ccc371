"""A reference or table that is a special file or too large fails fast, naming the file.

Each read runs in a child process with a time and memory limit, so a regression (a FIFO that
blocks for ever, /dev/zero read into memory) fails the test instead of hanging the suite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from normguide.data.storage import read_bytes
from normguide.data.storage.inputs import MAX_INPUT_BYTES

_CHILD = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    from normguide.data.storage import read_bytes
    try:
        read_bytes(sys.argv[1])
    except ValueError as exc:
        print("ValueError:", exc)
    else:
        print("read it")
""")


def _read_in_child(path: str) -> str:
    try:
        res = subprocess.run([sys.executable, "-c", _CHILD, path], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {path} did not return within 30 s")
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_reference_fails_fast(tmp_path):
    fifo = tmp_path / "ref.png"
    os.mkfifo(fifo)
    out = _read_in_child(str(fifo))
    assert "ValueError:" in out and str(fifo) in out and "FIFO" in out and "regular file" in out


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_device_reference_fails_fast():
    out = _read_in_child("/dev/zero")
    assert "ValueError:" in out and "/dev/zero" in out and "character device" in out


def test_oversized_file_refused_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(MAX_INPUT_BYTES + 1)  # sparse: no disk used
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    with pytest.raises(ValueError, match=rf"big\.png.*{MAX_INPUT_BYTES + 1} bytes, over the input limit"):
        read_bytes(str(big))
    assert not opened
    ok = tmp_path / "ok.png"
    ok.write_bytes(b"x" * 10)
    assert read_bytes(str(ok)) == b"x" * 10 and read_bytes(f"file://{ok}") == b"x" * 10


def test_a_local_read_returns_the_whole_file_whatever_its_stat_size(tmp_path):
    """Reads are sized by fstat (a 64 MiB read request per small file cost ~75 us); a file that
    holds more than its stat size says (it grew, or a /proc file that reports 0) is read on."""
    for n in (0, 1, 4095, 4096, 70_001):
        f = tmp_path / f"f{n}"
        f.write_bytes(os.urandom(n))
        assert read_bytes(str(f)) == f.read_bytes()
    proc = "/proc/self/cmdline"
    if os.path.exists(proc) and os.stat(proc).st_size == 0:
        assert len(read_bytes(proc)) > 0
