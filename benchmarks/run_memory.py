"""Benchmark: peak memory of a run does not grow with the number of images (outputs stream).

    flock /work/coord/heavy.lock nice -n 0 .venv/bin/python benchmarks/run_memory.py \
        [--images 200 3000] [--repeats 3] [--large-repeats 2] [--steps 1] [--batch-size 32] [--leak-bytes 3072]
        [--trace N]   # instead: tracemalloc's top N lines at the end of the concepts, per count

Each measurement is a fresh child process that runs one dataset-generation run on the demo
model through the local driver of :mod:`normguide.pipeline` (prepare, load concepts, invert, plan,
generate, finalize), without Prefect, so that only the product's own memory is measured. One
concept with two reference images (the shipped example's first concept), reconstruction off,
``--steps`` inversion and generation steps, ``plan.num_images`` = the image count, local output
in a temporary directory. The child reports its wall time, its peak resident set size
(``VmHWM`` from /proc/self/status, which includes the interpreter, torch and the model: the
baseline that both sizes share) and its **writing peak**: the largest VmRSS sampled every 20 ms
from the first image written to the end of the run (VmHWM is set by the model load's transient,
which a leak must outgrow before VmHWM moves at all). The comparison is on the writing peak.

Prints one row per image count: the median over ``--repeats`` runs (``--large-repeats`` for the
largest count) of the seconds and of the peak RSS, and the peak's ratio to the first (smallest)
count; then the growth per extra image and the **detection threshold**: the largest spread
between repeats of one count divided by the extra images, the smallest per-image leak the
comparison can tell from noise.

Why these sizes: the demo's images are 32 px, 3 KiB decoded (about 1-2 KiB as PNG), against a
baseline of about 600 MiB (interpreter, torch, the model), so 200 vs 2,000 images (the old
default) could not show a leak of one image each: 1,800 x 3 KiB = 5 MiB, within the noise and
under 1 % of the peak. 200 vs 3,000 images with ``--leak-bytes 3072`` (a positive control: the
child keeps 3 KiB for every image it writes, as a driver that held each decoded image would)
shows whether the comparison can see such a leak at all; the control's row must rise by about
3,000 x 3 KiB = 9 MiB over the normal row of the same count, against a repeat spread of a few
MiB (measured: printed with the table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
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


def _rss_mib() -> float:
    """VmRSS (current resident set) of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _child(num_images: int, steps: int, batch_size: int, workdir: str, leak_bytes: int = 0, trace: int = 0) -> None:
    sys.path.insert(0, str(REPO))
    from normguide.config import DEFAULT_CONCEPTS, RunConfig

    from normguide.data.storage.local import LocalStorage

    # Observation: from the first image written, a thread samples VmRSS every 20 ms: the peak
    # while images are generated and written ("writing peak"). VmHWM alone is set by the model
    # load's transient, which a leak must first outgrow before it shows.
    held, write_many, writing = [], LocalStorage.write_many, threading.Event()

    def observed_write_many(self, items, **kw):
        items = list(items)
        if any(key.startswith("images/") for key, _ in items):
            writing.set()
            if leak_bytes:  # the positive control: a simulated leak of leak_bytes per image written
                held.extend(b"\x01" * leak_bytes for key, _ in items if key.startswith("images/"))  # written: resident
        return write_many(self, items, **kw)

    LocalStorage.write_many = observed_write_many
    writing_peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            if writing.is_set():
                writing_peak[0] = max(writing_peak[0], _rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    traced: dict = {}
    if trace:  # tracemalloc from the model's load to the end of the concepts (before finalize)
        import tracemalloc

        from normguide.diffusion import get_pipeline
        from normguide.pipeline import steps as pipeline_steps

        get_pipeline("demo")
        finalize = pipeline_steps.finalize

        def traced_finalize(ctx, concept_ids):
            current, peak = tracemalloc.get_traced_memory()
            top = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__),
                                                             tracemalloc.Filter(False, "<frozen importlib*")])
            traced.update(current=current, peak=peak,
                          top=[str(s) for s in top.statistics("lineno")[:trace]])
            tracemalloc.stop()
            return finalize(ctx, concept_ids)

        pipeline_steps.finalize = traced_finalize
        tracemalloc.start(10)
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
    done.set()
    sampler.join()
    print(json.dumps({"images": num_images, "seconds": seconds, "peak_rss_mib": _peak_rss_mib(),
                      "writing_peak_mib": writing_peak[0], "traced": traced}), flush=True)


def _measure(num_images: int, steps: int, batch_size: int, leak_bytes: int = 0, trace: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="normguide-bench-mem-") as workdir:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(num_images), "--steps", str(steps),
             "--batch-size", str(batch_size), "--workdir", workdir, "--leak-bytes", str(leak_bytes),
             "--trace", str(trace)],
            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
    if out.returncode != 0:
        raise SystemExit(f"child run of {num_images} images failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[200, 3000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large-repeats", type=int, default=2, help="repeats of the largest count")
    ap.add_argument("--steps", type=int, default=1, help="inversion and generation steps")
    ap.add_argument("--batch-size", type=int, default=32, help="generation batch size")
    ap.add_argument("--leak-bytes", type=int, default=3072,
                    help="positive control: one more run of the largest count holding this many bytes per image (0: none)")
    ap.add_argument("--trace", type=int, default=0,
                    help="instead of the table: one run per count under tracemalloc, printing the Python memory "
                         "traced at the end of the concepts (current and peak) and its top N lines")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        _child(args.child, args.steps, args.batch_size, args.workdir, args.leak_bytes, args.trace)
        return
    if args.trace:
        for n in args.images:
            t = _measure(n, args.steps, args.batch_size, trace=args.trace)["traced"]
            print(f"{n} images: Python memory traced at the end of the concepts {t['current'] / 1e6:.3f} MB "
                  f"(peak {t['peak'] / 1e6:.3f} MB); top {args.trace} lines:")
            print("\n".join(f"  {line}" for line in t["top"]), flush=True)
        return

    load = os.getloadavg()
    print(f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) at start; demo model (32 px), 1 concept, "
          f"{args.steps} step(s), batch size {args.batch_size}, median of {args.repeats} run(s) per row "
          f"({args.large_repeats} for the largest count), each a fresh process, local output, no Prefect", flush=True)
    rows = []
    largest = max(args.images)
    for n in args.images:
        runs = [_measure(n, args.steps, args.batch_size) for _ in range(args.large_repeats if n == largest else args.repeats)]
        rows.append((f"{n}", n, runs))
    if args.leak_bytes:
        runs = [_measure(largest, args.steps, args.batch_size, args.leak_bytes)]
        rows.append((f"{largest} + control leak {args.leak_bytes} B/image", largest, runs))
    base = statistics.median(r["writing_peak_mib"] for r in rows[0][2])
    print("| images | seconds | peak RSS (VmHWM) MiB | writing peak MiB | ratio | runs' writing peaks MiB |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for label, _, runs in rows:
        hwm = statistics.median(r["peak_rss_mib"] for r in runs)
        rss = statistics.median(r["writing_peak_mib"] for r in runs)
        each = ", ".join(f"{r['writing_peak_mib']:.1f}" for r in runs)
        print(f"| {label} | {statistics.median(r['seconds'] for r in runs):.1f} | {hwm:.1f} | {rss:.1f} | "
              f"{rss / base:.3f} | {each} |")
    normal = [row for row in rows if "control" not in row[0]]
    if len(normal) >= 2:
        (_, lo, r0), (_, hi, r1) = normal[0], normal[-1]
        p0, p1 = (statistics.median(r["writing_peak_mib"] for r in rs) for rs in (r0, r1))
        spread = max(max(x["writing_peak_mib"] for x in rs) - min(x["writing_peak_mib"] for x in rs) for rs in (r0, r1))
        print(f"growth {lo:,} -> {hi:,} images: {p1 - p0:+.1f} MiB = {(p1 - p0) * 2**20 / (hi - lo):+.0f} B per extra "
              f"image; repeat spread {spread:.1f} MiB, so a leak above {spread * 2**20 / (hi - lo):.0f} B per image "
              f"shows (a decoded 32 px image is 3,072 B)")
    load = os.getloadavg()
    print(f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at end")


if __name__ == "__main__":
    main()
