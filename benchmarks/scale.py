"""Benchmark: ``normguide validate``, ``normguide plan`` and the local driver against the number of
concepts (issue 23, item 5: validate and plan at 10,000 concepts in <= 10 s; the driver's
per-concept overhead and its slope).

    flock /work/coord/heavy.lock nice -n 0 .venv/bin/python benchmarks/scale.py \
        [--concepts 1000 10000] [--driver 100 1000] [--repeats 3] [--code NAME=PATH ...]

Tables are built once (not measured) in a temporary folder: N concepts named after the shipped
example's digits, each with **its own three reference files** (copies of the example's 32 px
PNGs under distinct names: validate reads and decodes every one, and nothing is shared between
concepts that a cache could flatter).

- ``validate``: the CLI (``normguide validate TABLE``, every reference read and decoded, the
  demo tokenizer's warnings) in a fresh process: wall seconds and the child's CPU seconds
  (user + sys), interpreter start and imports included;
- ``plan``: the CLI's dry run (``normguide plan --concepts TABLE``) the same way;
- ``driver``: ``normguide.pipeline.run_dataset`` (the local driver, no Prefect) in a fresh process
  on the first N concepts with 1 reference each, 1 inversion and 1 generation step, 1 image,
  reconstruction off, evaluation off (the other defaults kept: exports, report), timed from the
  call to its return (imports and the interpreter excluded). Slope = the difference in seconds
  between the two counts over the difference in concepts: the per-concept cost with the fixed
  cost removed.

``--code before=/old/checkout`` adds rows for another checkout (PYTHONPATH; the CLI rows only).
Prints the load at the start and the end; rows are medians over ``--repeats`` runs (the driver:
``--driver-repeats``, default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DRIVER = r"""
import json, sys, time
code, table, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, code)
from normguide.config import RunConfig
from normguide.pipeline import run_dataset
cfg = RunConfig.model_validate({
    "concepts": table, "output": out, "model": "demo",
    "inversion": {"num_inference_steps": 1, "reconstruction": False},
    "generation": {"num_inference_steps": 1},
    "plan": {"methods": ["nao"], "num_images": 1},
    "evaluation": {"enabled": False},
})
t0 = time.perf_counter()
summary = run_dataset(cfg)
seconds = time.perf_counter() - t0
assert summary.finalized and len(summary.concepts) == n, summary
print(json.dumps({"seconds": seconds}))
"""


def _tables(folder: Path, sizes: list[int], refs_per_concept: int) -> dict[int, Path]:
    """N-concept tables, every concept with its own ``refs_per_concept`` reference files."""
    sys.path.insert(0, str(REPO))
    from normguide.config import DEFAULT_CONCEPTS
    from normguide.data.schema import parse_concept_table, write_concept_table

    with open(DEFAULT_CONCEPTS, "rb") as f:
        example = parse_concept_table(f.read(), source=DEFAULT_CONCEPTS).concepts
    pngs = {c.name: [Path(u).read_bytes() for u in c.reference_uris] for c in example}
    refs = folder / "refs"
    refs.mkdir()
    rows = []
    for i in range(max(sizes)):
        c = example[i % len(example)]
        uris = []
        for j in range(refs_per_concept):
            path = refs / f"c{i:05d}-{j}.png"
            path.write_bytes(pngs[c.name][j % len(pngs[c.name])])
            uris.append(str(path))
        rows.append({"concept_id": f"c{i:05d}", "name": c.name, "reference_uris": uris})
    out = {}
    for n in sizes:
        out[n] = folder / f"concepts-{n}.parquet"
        write_concept_table(rows[:n], str(out[n]))
    return out


def _cli(code: str, args: list[str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one ``normguide`` CLI call, with ``code`` on the path."""
    exe = Path(sys.executable).parent / "normguide"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=tempfile.gettempdir(),
                         env=dict(os.environ, PYTHONPATH=code))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"normguide {' '.join(args)} failed with {code}:\n{out.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _driver(code: str, table: Path, n: int, work: Path, timeout: float) -> float:
    """Seconds of one local-driver run on ``n`` concepts; inf when it ran past ``timeout``."""
    out_dir = work / f"out-{time.monotonic_ns()}"
    try:
        res = subprocess.run([sys.executable, "-c", DRIVER, code, str(table), str(out_dir), str(n)], capture_output=True,
                             text=True, cwd=tempfile.gettempdir(), timeout=timeout,
                             env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    except subprocess.TimeoutExpired:
        return float("inf")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    if res.returncode != 0:
        raise SystemExit(f"the local driver on {n} concepts failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, nargs="+", default=[1000, 10000], help="validate and plan sizes")
    ap.add_argument("--driver", type=int, nargs="*", default=[100, 1000], help="local driver sizes (none: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--driver-repeats", type=int, default=1)
    ap.add_argument("--driver-timeout", type=float, default=420, help="seconds before a driver run is stopped")
    ap.add_argument("--commands", nargs="+", default=["validate", "plan"], choices=["validate", "plan"])
    ap.add_argument("--code", nargs="+", default=[], metavar="NAME=PATH")
    args = ap.parse_args()
    codes = [tuple(c.split("=", 1)) for c in args.code] or [("after", str(REPO))]
    codes = [(name, str(Path(path).resolve())) for name, path in codes]

    with tempfile.TemporaryDirectory(prefix="normguide-bench-scale-") as tmp:
        tmp = Path(tmp)
        tables = _tables(tmp, sorted(set(args.concepts)), 3)
        load = os.getloadavg()
        print(f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) at start; demo model; 3 distinct "
              f"reference files per concept; median of {args.repeats} fresh processes per row")
        if args.commands:
            print("| command | code | concepts | wall s | CPU s (user+sys) | CPU ms per concept | runs' wall s |")
            print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        for command in args.commands:
            for n in args.concepts:
                for name, code in codes:
                    argv = ["validate", str(tables[n])] if command == "validate" else \
                        ["plan", "--concepts", str(tables[n]), "--output", str(tmp / "plan-out")]
                    runs = [_cli(code, argv) for _ in range(args.repeats)]
                    wall = statistics.median(r[0] for r in runs)
                    cpu = statistics.median(r[1] for r in runs)
                    each = ", ".join(f"{r[0]:.1f}" for r in runs)
                    print(f"| {command} | {name} | {n:,} | {wall:.1f} | {cpu:.1f} | {1000 * cpu / n:.2f} | {each} |",
                          flush=True)
        if args.driver:
            one_ref = {}
            sys.path.insert(0, str(REPO))
            from normguide.data.schema import parse_concept_table, write_concept_table

            big = max(tables)
            table = parse_concept_table(tables[big].read_bytes(), source=str(tables[big]))
            for n in args.driver:
                one_ref[n] = tmp / f"driver-{n}.parquet"
                write_concept_table([{"concept_id": c.concept_id, "name": c.name, "reference_uris": [c.reference_uris[0]]}
                                     for c in table.concepts[:n]], str(one_ref[n]))
            print("\nlocal driver (run_dataset), 1 reference, 1 image, 1 inversion + 1 generation step, evaluation off, "
                  f"median of {args.driver_repeats}:")
            print("| concepts | seconds | seconds per concept | runs |")
            print("| ---: | ---: | ---: | --- |")
            secs = {}
            for n in args.driver:
                runs = [_driver(str(REPO), one_ref[n], n, tmp, args.driver_timeout) for _ in range(args.driver_repeats)]
                secs[n] = statistics.median(runs)
                print(f"| {n:,} | {secs[n]:.1f} | {secs[n] / n:.3f} | {', '.join(f'{r:.1f}' for r in runs)} |", flush=True)
            if len(secs) >= 2 and all(v != float("inf") for v in secs.values()):
                lo, hi = min(secs), max(secs)
                slope = (secs[hi] - secs[lo]) / (hi - lo)
                print(f"slope {lo:,} -> {hi:,}: {slope:.3f} s per concept; fixed part {secs[lo] - slope * lo:.1f} s; "
                      f"10,000 concepts extrapolated: {secs[lo] + slope * (10_000 - lo):.0f} s")
        load = os.getloadavg()
        print(f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at end")


if __name__ == "__main__":
    main()
