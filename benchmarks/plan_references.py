"""Planning one concept with many references (issue 25: 1,000 references in <= 10 s and <= 1 GB).

Each row plans one concept (method nao, 8 images, the demo's seed shape 4x8x8) from K random
seeds in a fresh process, and reports the wall time of ``plan_seeds`` and the process's peak
resident memory (ru_maxrss, which includes torch's import, ~300 MB). The median of --runs runs.

    flock /work/coord/heavy.lock nice -n 0 .venv/bin/python benchmarks/plan_references.py [--runs 3] [--refs 100 1000]
    # the code before the change: the same script with PYTHONPATH pointing at an older checkout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from normguide.data.plan import plan_seeds
K = int(sys.argv[1])
inv = torch.randn(K, 4, 8, 8, generator=torch.Generator().manual_seed(0))
t0 = time.perf_counter()
plan_seeds(inv, concept_id="c", methods=("nao",), num_images=8)
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--refs", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min); "
          f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print("| references | plan seconds (median) | peak RSS MB (median) | runs |")
    print("| ---: | ---: | ---: | ---: |")
    for k in args.refs:
        secs, mem = [], []
        for _ in range(args.runs):
            try:
                out = subprocess.run([sys.executable, "-c", CHILD, str(k)], capture_output=True, text=True,
                                     timeout=args.timeout, check=True)
            except subprocess.TimeoutExpired:
                secs.append(float("inf"))
                break
            r = json.loads(out.stdout.strip().splitlines()[-1])
            secs.append(r["seconds"])
            mem.append(r["peak_mb"])
        s = statistics.median(secs)
        shown = f"> {args.timeout:.0f} (stopped)" if s == float("inf") else f"{s:.2f}"
        mem_shown = f"{statistics.median(mem):.0f}" if mem else "-"
        print(f"| {k} | {shown} | {mem_shown} | {len(secs)} |", flush=True)


if __name__ == "__main__":
    main()
