"""Benchmark: Storage.write_many against one-at-a-time puts, on a local S3 server (moto).

    .venv/bin/python benchmarks/storage.py [--images 1000] [--repeats 3] [--batch-size 64] [--rtt-ms 0]

Starts its own moto server on a free loopback port, makes ``--images`` 64x64 RGB noise PNGs
plus a small Parquet manifest, and writes them to a fresh bucket prefix per run, (a) with
``Storage.write_many`` and (b) one ``s3fs.pipe_file`` per object, sequentially. Prints the
median over ``--repeats`` runs of each. The PNGs are encoded before timing: only the writes are
measured. Needs moto[server], Pillow, numpy, pyarrow.

``--rtt-ms N`` puts tests/tcp_front.py between the client and moto, holding every response
for N ms: a stand-in for the round trip to a remote endpoint (on loopback there is none, and
moto, one Python process, is CPU-bound, so the concurrency of write_many shows mostly when
requests wait on the network, as they do against real S3).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402

from normguide.config import StorageConfig  # noqa: E402
from normguide.data.storage import Storage, storage_options_for  # noqa: E402
from normguide.data.storage.s3 import s3_filesystem  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto server did not start")


def _noise_pngs(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _manifest(n: int) -> bytes:
    table = pa.table({"image_id": [f"{i:05d}" for i in range(n)], "concept_id": ["c1"] * n,
                      "file_name": [f"images/c1/{i:05d}.png" for i in range(n)]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rtt-ms", type=float, default=0.0, help="simulated round trip added to each response")
    args = ap.parse_args()

    pngs = _noise_pngs(args.images)
    manifest = _manifest(args.images)
    port = _free_port()
    proc = _start_moto(port)
    front = None
    try:
        if args.rtt_ms > 0:
            front_port = _free_port()
            front = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve().parent.parent / "tests" / "tcp_front.py"),
                 str(front_port), str(port), str(args.rtt_ms)], stdout=subprocess.PIPE)
            assert front.stdout is not None and front.stdout.readline().strip() == b"ready"
            port = front_port
        config = StorageConfig(endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                               key="benchmark", secret="benchmark")
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        fs = s3_filesystem(storage_options_for(f"s3://{bucket}", config))
        fs.call_s3("create_bucket", Bucket=bucket)

        def run_write_many() -> float:
            store = Storage.open(f"s3://{bucket}/wm-{uuid.uuid4().hex[:8]}", storage_config=config)
            t0 = time.perf_counter()
            store.write_many(((f"images/c1/{i:05d}.png", b) for i, b in enumerate(pngs)), batch_size=args.batch_size)
            store.write_bytes("manifest.parquet", manifest)
            return time.perf_counter() - t0

        def run_one_at_a_time() -> float:
            prefix = f"{bucket}/seq-{uuid.uuid4().hex[:8]}"
            t0 = time.perf_counter()
            for i, b in enumerate(pngs):
                fs.pipe_file(f"{prefix}/images/c1/{i:05d}.png", b)
            fs.pipe_file(f"{prefix}/manifest.parquet", manifest)
            return time.perf_counter() - t0

        run_write_many()  # warm up connections and the server
        timings: dict[str, list[float]] = {"write_many": [], "one-at-a-time": []}
        for _ in range(args.repeats):  # interleaved, so drift in the machine's load hits both
            timings["one-at-a-time"].append(run_one_at_a_time())
            timings["write_many"].append(run_write_many())
    finally:
        for p in (front, proc):
            if p is not None:
                p.terminate()
                p.wait(timeout=10)

    seq = statistics.median(timings["one-at-a-time"])
    print(f"moto server on loopback, {os.cpu_count()} CPUs; {args.images} 64x64 PNGs "
          f"({sum(map(len, pngs)) / len(pngs) / 1024:.1f} KiB each) + manifest.parquet; "
          f"median of {args.repeats} runs; write_many batch_size={args.batch_size}; "
          f"added round trip {args.rtt_ms:g} ms")
    print(f"| {'writer':<14} | {'images':>6} | {'seconds':>7} | {'images/s':>8} | {'ratio':>5} |")
    print(f"|{'-' * 16}|{'-' * 8}|{'-' * 9}|{'-' * 10}|{'-' * 7}|")
    for name in ("one-at-a-time", "write_many"):
        med = statistics.median(timings[name])
        print(f"| {name:<14} | {args.images:>6} | {med:>7.2f} | {args.images / med:>8.0f} | {seq / med:>5.1f} |")


if __name__ == "__main__":
    main()
