"""Benchmark: peak memory of a run does not grow with the number of images (outputs stream).

    .venv/bin/python benchmarks/run_memory.py [--images 200 2000] [--repeats 3] [--steps 1] [--batch-size 8]

Each measurement is a fresh child process that runs one dataset-generation run on the demo
model through the local driver of :mod:`normguide.pipeline` (prepare, load concepts, invert, plan,
generate, finalize), without Prefect, so that only the product's own memory is measured. One
concept with two reference images (the shipped example's first concept), reconstruction off,
``--steps`` inversion and generation steps, ``plan.num_images`` = the image count, local output
in a temporary directory. The child reports its wall time and its peak resident set size
(``VmHWM`` from /proc/self/status, which includes the interpreter, torch and the model: the
baseline that both sizes share).

Prints one row per image count: the median over ``--repeats`` runs of the seconds and of the
peak RSS, and the peak's ratio to the first (smallest) count. Target: the 2,000-image peak
within 10% of the 200-image peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _peak_rss_mib() -> float:
    """VmHWM (peak resident set) of this process in MiB; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def _child(num_images: int, steps: int, batch_size: int, workdir: str) -> None:
    sys.path.insert(0, str(REPO))
    from normguide.config import DEFAULT_CONCEPTS, RunConfig
    from normguide.data.schema import parse_concept_table, write_concept_table
    from normguide.pipeline import run_dataset

    # one concept, two of the shipped example's reference images (absolute paths)
    with open(DEFAULT_CONCEPTS, "rb") as f:
        first = parse_concept_table(f.read(), source=DEFAULT_CONCEPTS).concepts[0]
    table = os.path.join(workdir, "concepts.parquet")
    write_concept_table([{"concept_id": first.concept_id, "name": first.name,
                          "reference_uris": list(first.reference_uris)[:2]}], table)
    cfg = RunConfig.model_validate({
        "concepts": table, "output": os.path.join(workdir, "out"), "model": "demo",
        "inversion": {"num_inference_steps": steps, "reconstruction": False, "batch_size": 2},
        "generation": {"num_inference_steps": steps, "batch_size": batch_size},
        "plan": {"methods": ["nao"], "num_images": num_images},
        "evaluation": {"enabled": False},
    })
    t0 = time.perf_counter()
    summary = run_dataset(cfg)
    if not summary.finalized or summary.concepts[first.concept_id].images != num_images:
        raise SystemExit(f"expected {num_images} images, got {summary}")
    seconds = time.perf_counter() - t0
    print(json.dumps({"images": num_images, "seconds": seconds, "peak_rss_mib": _peak_rss_mib()}), flush=True)


def _measure(num_images: int, steps: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="normguide-bench-mem-") as workdir:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(num_images), "--steps", str(steps),
             "--batch-size", str(batch_size), "--workdir", workdir],
            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
    if out.returncode != 0:
        raise SystemExit(f"child run of {num_images} images failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1, help="inversion and generation steps")
    ap.add_argument("--batch-size", type=int, default=8, help="generation batch size")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        _child(args.child, args.steps, args.batch_size, args.workdir)
        return

    print(f"demo model, 1 concept, {args.steps} step(s), batch size {args.batch_size}, "
          f"median of {args.repeats} run(s) per row, local output, no Prefect", flush=True)
    rows = []
    for n in args.images:
        runs = [_measure(n, args.steps, args.batch_size) for _ in range(args.repeats)]
        rows.append((n, statistics.median(r["seconds"] for r in runs), statistics.median(r["peak_rss_mib"] for r in runs),
                     [round(r["peak_rss_mib"], 1) for r in runs]))
    base = rows[0][2]
    print(f"{'images':>8} {'seconds':>9} {'peak RSS MiB':>13} {'ratio':>7}  runs (MiB)")
    for n, sec, rss, each in rows:
        print(f"{n:>8} {sec:>9.1f} {rss:>13.1f} {rss / base:>7.3f}  {each}")


if __name__ == "__main__":
    main()
