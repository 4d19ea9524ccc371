"""Benchmark: normguide's Storage.write_many against s3fs's own batched writers, on a local S3
server (moto).

    .venv/bin/python benchmarks/storage.py [--images 1000] [--repeats 3] [--batch-size 64] [--rtt-ms 0]

Starts its own moto server on a free loopback port, makes ``--images`` 64x64 RGB noise PNGs
plus a small Parquet manifest, and writes them to a fresh bucket prefix per run with:

- ``s3fs pipe({...})``: the fair baseline (issue 23): one ``S3FileSystem.pipe`` call with a dict
  of every object, s3fs's own concurrent batches (its default ``batch_size``, and again with
  ``--batch-size`` so the concurrency matches normguide's);
- ``s3fs put(dir)``: ``S3FileSystem.put`` of a local directory of the same files (written to a
  temporary directory before the clock starts), recursive;
- ``normguide write_many``: ``Storage.write_many(batch_size=--batch-size)``, which adds per-key
  validation and per-object retries with backoff on top of concurrent puts;
- ``one-at-a-time``: one ``pipe_file`` per object (the old strawman, kept for reference).

Every writer writes the manifest after the images. Rows run interleaved (each repeat runs every
row once); the table gives the median over ``--repeats`` and the ratio to ``s3fs pipe({...})``
(> 1: faster than s3fs). The PNGs are encoded before timing: only the writes are measured. The
load average is printed before and after. Needs moto[server], Pillow, numpy, pyarrow.

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
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from fsspec.asyn import _get_batch_size  # noqa: E402 - s3fs's default concurrency for pipe
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

        def run_pipe(batch_size: int | None) -> float:
            prefix = f"{bucket}/pipe-{uuid.uuid4().hex[:8]}"
            t0 = time.perf_counter()
            fs.pipe({f"{prefix}/images/c1/{i:05d}.png": b for i, b in enumerate(pngs)}, batch_size=batch_size)
            fs.pipe_file(f"{prefix}/manifest.parquet", manifest)
            return time.perf_counter() - t0

        local_dir = tempfile.mkdtemp(prefix="normguide-bench-storage-")
        os.makedirs(os.path.join(local_dir, "images", "c1"))
        for i, b in enumerate(pngs):
            with open(os.path.join(local_dir, "images", "c1", f"{i:05d}.png"), "wb") as f:
                f.write(b)

        def run_put() -> float:
            prefix = f"{bucket}/put-{uuid.uuid4().hex[:8]}"
            t0 = time.perf_counter()
            fs.put(os.path.join(local_dir, "images"), f"{prefix}/images", recursive=True)
            fs.pipe_file(f"{prefix}/manifest.parquet", manifest)
            return time.perf_counter() - t0

        def run_one_at_a_time() -> float:
            prefix = f"{bucket}/seq-{uuid.uuid4().hex[:8]}"
            t0 = time.perf_counter()
            for i, b in enumerate(pngs):
                fs.pipe_file(f"{prefix}/images/c1/{i:05d}.png", b)
            fs.pipe_file(f"{prefix}/manifest.parquet", manifest)
            return time.perf_counter() - t0

        rows = {
            f"s3fs pipe({{...}}), batch_size {fs.batch_size or _get_batch_size(nofiles=True)} (default)": lambda: run_pipe(None),
            f"s3fs pipe({{...}}), batch_size {args.batch_size}": lambda: run_pipe(args.batch_size),
            "s3fs put(dir, recursive)": run_put,
            f"normguide write_many, batch_size {args.batch_size}": run_write_many,
            "one-at-a-time pipe_file": run_one_at_a_time,
        }
        load_before = os.getloadavg()
        run_write_many()  # warm up connections and the server
        run_pipe(None)
        timings: dict[str, list[float]] = {k: [] for k in rows}
        for _ in range(args.repeats):  # interleaved, so drift in the machine's load hits every row
            for key, fn in rows.items():
                timings[key].append(fn())
        load_after = os.getloadavg()
        written = len(fs.find(bucket))  # every writer wrote every object (2 warm-up runs besides)
        expected = (len(rows) * args.repeats + 2) * (len(pngs) + 1)
        if written != expected:
            raise SystemExit(f"the bucket holds {written} objects, expected {expected}: a writer lost objects")
    finally:
        import shutil

        if "local_dir" in locals():
            shutil.rmtree(local_dir, ignore_errors=True)
        for p in (front, proc):
            if p is not None:
                p.terminate()
                p.wait(timeout=10)

    base_key = next(iter(timings))
    base = statistics.median(timings[base_key])
    print(f"moto server on loopback, {os.cpu_count()} CPUs; {args.images} 64x64 PNGs "
          f"({sum(map(len, pngs)) / len(pngs) / 1024:.1f} KiB each) + manifest.parquet; "
          f"median of {args.repeats} interleaved runs; added round trip {args.rtt_ms:g} ms; "
          f"load average {' / '.join(f'{x:.1f}' for x in load_before)} before, "
          f"{' / '.join(f'{x:.1f}' for x in load_after)} after; all {written} objects listed back")
    print(f"| {'writer':<44} | {'images':>6} | {'seconds':>7} | {'images/s':>8} | {'vs s3fs pipe':>12} |")
    print(f"|{'-' * 46}|{'-' * 8}|{'-' * 9}|{'-' * 10}|{'-' * 14}|")
    for name, secs in timings.items():
        med = statistics.median(secs)
        print(f"| {name:<44} | {args.images:>6} | {med:>7.2f} | {args.images / med:>8.0f} | {base / med:>11.2f}x |")


if __name__ == "__main__":
    main()
