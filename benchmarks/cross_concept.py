"""Benchmark: generation batched across concepts (``generation.batch_across_concepts``) vs per
concept, on many concepts of few images each (CPU, demo model).

    flock /work/coord/heavy.lock nice -n 0 .venv/bin/python benchmarks/cross_concept.py \
        [--concepts 64] [--batch-sizes 8 32] [--repeats 3]

Every concept: 1 reference image and a prompt of its own (the shipped example table's concepts,
cycled, each renamed "<name> <i>" so no two prompts are equal), 1 planned image, 2 inversion and 2
generation steps, reconstruction off, evaluation off, local output, torch on 1 thread, the demo
model loaded once. Per batch size, the two modes run in alternation (off, on, off, on, ...), each
run into a fresh output root through the local driver (``run_dataset``); the table gives the
median wall and process CPU seconds of ``--repeats`` runs, the generation model seconds
(run.json ``cost.generation_seconds``: the time spent waiting on the model's batches), the
generation batches each mode runs, and the ratios off/on side by side (> 1: across concepts is
faster). Inversion (one reference per
concept) is the same in both modes, so the whole-run ratio is below the generation-only one.

Then the byte check: with ``batch_invariant: true`` at the largest batch size, both modes must
write byte-identical seeds, images, manifest parts and manifest (printed: "identical" or the
differing files).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _table(n: int, workdir: str) -> str:
    from normguide.config import DEFAULT_CONCEPTS
    from normguide.data.schema import parse_concept_table, write_concept_table

    with open(DEFAULT_CONCEPTS, "rb") as f:
        shipped = parse_concept_table(f.read(), source=DEFAULT_CONCEPTS).concepts
    table = os.path.join(workdir, "concepts.parquet")
    rows = []
    for i in range(n):
        c = shipped[i % len(shipped)]
        rows.append({"concept_id": f"c{i:05d}", "name": f"{c.name} {i}", "reference_uris": [c.reference_uris[0]]})
    write_concept_table(rows, table)
    return table


def _config(table: str, output: str, batch: int, across: bool, invariant: bool = False):
    from normguide.config import RunConfig

    return RunConfig.model_validate({
        "concepts": table, "output": output, "model": "demo",
        "inversion": {"num_inference_steps": 2, "reconstruction": False, "batch_size": 1},
        "generation": {"num_inference_steps": 2, "batch_size": batch, "batch_across_concepts": across,
                       "batch_invariant": invariant},
        "plan": {"methods": ["nao"], "num_images": 1},
        "evaluation": {"enabled": False},
    })


def _files(root: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(root)): p.read_bytes() for d in ("seeds", "images", "manifest")
             for p in sorted((root / d).rglob("*")) if p.is_file()}
    return {**files, "manifest.parquet": (root / "manifest.parquet").read_bytes()}


def _run(cfg, model) -> tuple[float, float, float]:
    """(wall s, process CPU s, generation model s: run.json cost's ``generation_seconds``)."""
    from normguide.pipeline import run_dataset

    w0, c0 = time.perf_counter(), time.process_time()
    summary = run_dataset(cfg, model=model)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if not summary.ok:
        raise SystemExit(f"run failed: {summary.failed}")
    return wall, cpu, summary.cost.generation_seconds


def _batches(n: int, batch: int, across: bool, cfg) -> int:
    if not across:
        return n  # one image per concept: one batch each
    from normguide.data.schema import Concept
    from normguide.pipeline.crossbatch import groups

    fake = [Concept(concept_id=f"c{i}", name="x", reference_uris=("x",)) for i in range(n)]
    return sum(math.ceil(len(g) / batch) for g in groups(fake, cfg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import subprocess

    import torch

    from normguide.diffusion import load_pipeline

    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    print(f"cross_concept.py: {args.concepts} concepts x 1 image, demo model, 2 inversion + 2 generation steps, "
          f"reconstruction off, evaluation off, torch 1 thread; median of {args.repeats}; commit {commit}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {os.getloadavg()[0]:.2f}", flush=True)
    model = load_pipeline("demo")
    with tempfile.TemporaryDirectory() as work:
        table = _table(args.concepts, work)
        _run(_config(table, os.path.join(work, "warm"), args.batch_sizes[0], True), model)  # imports, first calls
        print("| batch | mode | gen. batches | wall s | CPU s | generation s | wall off/on | CPU off/on | generation off/on |",
              flush=True)
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
        for b in args.batch_sizes:
            times: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
            for r in range(args.repeats):
                for across in (False, True):
                    out = os.path.join(work, f"b{b}-{across}-{r}")
                    times[across].append(_run(_config(table, out, b, across), model))
            med = {a: [statistics.median(x[k] for x in t) for k in range(3)] for a, t in times.items()}
            for across in (False, True):
                cfg = _config(table, "x", b, across)
                ratio = (" | ".join(f"{med[False][k] / med[True][k]:.2f}x" for k in range(3)) if across else " | | ")
                print(f"| {b} | {'across concepts' if across else 'per concept'} | {_batches(args.concepts, b, across, cfg)} "
                      f"| {med[across][0]:.2f} | {med[across][1]:.2f} | {med[across][2]:.2f} | {ratio} |", flush=True)
        b = max(args.batch_sizes)
        roots = {}
        for across in (False, True):
            cfg = _config(table, os.path.join(work, f"inv-{across}"), b, across, invariant=True)
            _run(cfg, model)
            from normguide.pipeline import output_root

            roots[across] = _files(Path(output_root(cfg)))
        diff = [k for k in roots[False] if roots[False][k] != roots[True].get(k)] + sorted(set(roots[True]) - set(roots[False]))
        print(f"byte check, batch_invariant on, batch {b}: {len(roots[True])} files, "
              f"{'identical' if not diff else 'DIFFERENT: ' + ', '.join(diff[:10])}", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
