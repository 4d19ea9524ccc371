"""Benchmark: evaluation's peak memory against the number of images (issue 23, item 5).

    flock /work/coord/heavy.lock nice -n 0 .venv/bin/python benchmarks/eval_memory.py \
        [--images 200 2000] [--size 256] [--repeats 3] [--code NAME=PATH ...]

Setup (once, not measured): one small finished run of the demo model (the shipped example's
first concept, 2 references, 8 images, 1 step, evaluation off) through the local driver, then for
each image count N a copy of it whose manifest has N rows: the 8 images, each made ``--size`` px
(nearest upscale, shifted by a few pixels per copy so no two are the same bytes), their sha256,
width and height in the manifest. A decoded ``--size`` px RGB image is size² x 3 bytes (256 px:
192 KiB), so holding 2,000 of them would take 375 MiB more than holding 200.

Each measurement is a fresh child process (so runs share no peak) that imports the code under
``--code`` (default: this checkout; give ``before=/path/to/old/checkout`` to add the old code's
rows), opens the run as ``normguide evaluate`` does (keeping the settings that code knows) and
evaluates it (the demo's digit judge,
its held-out test digits, eval/metrics.parquet, report.md, metrics.png). It reports the wall
time, the peak resident set (VmHWM) before evaluating (interpreter, torch, pandas imported and
the run opened) and after, and the sha256 of eval/metrics.parquet and eval/report.md, so the
codes' outputs are compared. Rows: the median over ``--repeats`` runs; growth = peak - the
peak before evaluating.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import hashlib, json, sys, time
from pathlib import Path

def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0

code, run = sys.argv[1], sys.argv[2]
sys.path.insert(0, code)
import normguide
assert normguide.__file__.startswith(code), (normguide.__file__, code)
import pandas, torch  # noqa: F401 - in the baseline, as in any evaluation
from normguide.config import RunConfig
from normguide.data import run_record
from normguide.pipeline import RunContext, steps

# as `normguide evaluate` opens a run, keeping only the settings this code knows (the run was
# made by the newest code measured; an older one refuses settings added since)
store = run_record.open_run(run, storage_config=RunConfig().storage)
doc = json.loads(store.read_bytes("run.json"))
cfg = RunConfig.model_validate({k: v for k, v in doc["config"].items() if k in RunConfig.model_fields})
ctx = RunContext.create(cfg, storage=store)
before = hwm()
t0 = time.perf_counter()
steps.evaluate(ctx)
seconds = time.perf_counter() - t0
sha = {f: hashlib.sha256((Path(run) / "eval" / f).read_bytes()).hexdigest()[:12] for f in ("metrics.parquet", "report.md")}
print(json.dumps({"seconds": seconds, "before_mib": before, "peak_mib": hwm(), "sha": sha}))
"""


def _base_run(workdir: Path) -> Path:
    """A finished demo run of 8 images (1 step, evaluation off); its root."""
    sys.path.insert(0, str(REPO))
    from normguide.config import DEFAULT_CONCEPTS, RunConfig
    from normguide.data.schema import parse_concept_table, write_concept_table
    from normguide.pipeline import run_dataset

    with open(DEFAULT_CONCEPTS, "rb") as f:
        first = parse_concept_table(f.read(), source=DEFAULT_CONCEPTS).concepts[0]
    table = workdir / "concepts.parquet"
    write_concept_table([{"concept_id": first.concept_id, "name": first.name,
                          "reference_uris": list(first.reference_uris)[:2]}], str(table))
    cfg = RunConfig.model_validate({
        "concepts": str(table), "output": str(workdir / "base"), "model": "demo",
        "inversion": {"num_inference_steps": 1, "reconstruction": False, "batch_size": 2},
        "generation": {"num_inference_steps": 1, "batch_size": 8},
        "plan": {"methods": ["nao"], "num_images": 8},
        "evaluation": {"enabled": False},
    })
    summary = run_dataset(cfg)
    if not summary.finalized:
        raise SystemExit(f"the base run did not finish: {summary}")
    (root,) = [p for p in (workdir / "base").iterdir() if p.is_dir()]
    return root


def _scaled_copy(base: Path, dest: Path, n: int, size: int) -> int:
    """``base`` copied to ``dest`` with n manifest rows of ``size`` px images; PNG bytes written."""
    import pandas as pd
    from PIL import Image, ImageChops

    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("images", "eval"))
    manifest = pd.read_parquet(base / "manifest.parquet")
    rows, written = [], 0
    for i in range(n):
        row = manifest.iloc[i % len(manifest)].copy()
        with Image.open(base / row.file_name) as im:
            big = im.convert("RGB").resize((size, size), Image.Resampling.NEAREST)
        big = ImageChops.offset(big, i % 17, (i // 17) % 13)
        buf = io.BytesIO()
        big.save(buf, format="PNG")
        data = buf.getvalue()
        row["image_id"] = f"{row.image_id}-x{i:05d}"
        row["file_name"] = f"images/{row.concept_id}/{row.image_id}.png"
        row["sha256"], row["width"], row["height"] = hashlib.sha256(data).hexdigest(), size, size
        (dest / row.file_name).parent.mkdir(parents=True, exist_ok=True)
        (dest / row.file_name).write_bytes(data)
        written += len(data)
        rows.append(row)
    out = pd.DataFrame(rows).astype(manifest.dtypes.to_dict())
    out.to_parquet(dest / "manifest.parquet", index=False)
    return written


def _measure(code: str, run: Path) -> dict:
    work = run.parent / f"eval-{time.monotonic_ns()}"
    shutil.copytree(run, work)  # each measurement writes its own eval/
    out = subprocess.run([sys.executable, "-c", CHILD, code, str(work)], capture_output=True, text=True,
                         cwd=tempfile.gettempdir(), env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if out.returncode != 0:
        raise SystemExit(f"evaluation with {code} failed:\n{out.stderr[-4000:]}")
    shutil.rmtree(work)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--code", nargs="+", default=[], metavar="NAME=PATH",
                    help="checkouts to measure, e.g. before=/work/old after=. (default: after=this checkout)")
    args = ap.parse_args()
    codes = [tuple(c.split("=", 1)) for c in args.code] or [("after", str(REPO))]
    codes = [(name, str(Path(path).resolve())) for name, path in codes]

    with tempfile.TemporaryDirectory(prefix="normguide-bench-eval-") as tmp:
        tmp = Path(tmp)
        base = _base_run(tmp)
        runs = {n: tmp / f"run-{n}" for n in args.images}
        png = {n: _scaled_copy(base, runs[n], n, args.size) for n in args.images}
        load = os.getloadavg()
        decoded = args.size * args.size * 3
        print(f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) at start; demo digit judge; images "
              f"{args.size} px RGB ({decoded / 1024:.0f} KiB decoded each); median of {args.repeats} runs, each a "
              "fresh process; peak = VmHWM; growth = peak - VmHWM before evaluating")
        print("| code | images | PNG MiB on disk | seconds | peak MiB | growth MiB | runs' peaks MiB | metrics.parquet / report.md sha256 |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
        results = {}
        for n in args.images:
            for name, path in codes:
                rs = [_measure(path, runs[n]) for _ in range(args.repeats)]
                each = ", ".join(f"{r['peak_mib']:.0f}" for r in rs)
                shas = sorted({f"{r['sha']['metrics.parquet']} / {r['sha']['report.md']}" for r in rs})
                peak = statistics.median(r["peak_mib"] for r in rs)
                growth = statistics.median(r["peak_mib"] - r["before_mib"] for r in rs)
                results[(name, n)] = (peak, growth, [r["peak_mib"] for r in rs])
                print(f"| {name} | {n:,} | {png[n] / 2**20:.1f} | {statistics.median(r['seconds'] for r in rs):.1f} | "
                      f"{peak:.0f} | {growth:.0f} | {each} | "
                      f"{', '.join(shas)} |", flush=True)
        if len(args.images) >= 2:
            lo, hi = args.images[0], args.images[-1]
            held = (hi - lo) * decoded / 2**20
            print(f"\nper code, {lo:,} -> {hi:,} images (holding the extra images decoded would add {held:.0f} MiB):")
            for name, _ in codes:
                (p0, g0, r0), (p1, g1, r1) = results[(name, lo)], results[(name, hi)]
                noise = max(max(r0) - min(r0), max(r1) - min(r1))
                print(f"- {name}: peak x{p1 / p0:.3f} ({p1 - p0:+.0f} MiB), growth {g0:.0f} -> {g1:.0f} MiB, "
                      f"{(g1 - g0) * 2**20 / (hi - lo) / 1024:+.1f} KiB per extra image "
                      f"(repeat spread {noise:.0f} MiB: a per-image cost above "
                      f"{noise * 2**20 / (hi - lo) / 1024:.1f} KiB shows)")
        load = os.getloadavg()
        print(f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at end")


if __name__ == "__main__":
    main()
