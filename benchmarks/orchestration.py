"""Benchmark: what Prefect orchestration costs per concept, as the concept table grows.

    .venv/bin/python benchmarks/orchestration.py [--concepts 10 100 1000] [--repeats 1]

Every concept: 1 reference image (the shipped example's first), 1 planned image, 2 inversion and
2 generation steps, reconstruction off, demo model, local output, evaluation off. Each measurement
is a fresh child process:

- ``local``: the library loop, ``normguide.pipeline.run_dataset`` (no Prefect): the work itself;
- ``flow``: one flow run of ``flows/generate_dataset.py`` against a real temporary Prefect API
  (``prefect_test_harness``, a server in its own process, started before the clock starts).

Columns: seconds; orchestration overhead per concept = (flow - local) / concepts; peak RSS of the
process that runs the flow (VmHWM: interpreter, torch, the model and Prefect's client state, not
the API server); task runs the flow run created (read back from the API).

Not measured here: the fan-out parent (``flows/fan_out.py``): it launches flow runs of a deployment
on a work pool, so it needs a served deployment and workers (see tests/deployments); its parent
creates one flow run per shard plus a handful of task runs, whatever the number of concepts.
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
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _config(n: int, workdir: str):
    from normguide.config import DEFAULT_CONCEPTS, RunConfig
    from normguide.data.schema import parse_concept_table, write_concept_table

    with open(DEFAULT_CONCEPTS, "rb") as f:
        first = parse_concept_table(f.read(), source=DEFAULT_CONCEPTS).concepts[0]
    table = os.path.join(workdir, "concepts.parquet")
    write_concept_table([{"concept_id": f"c{i:05d}", "name": first.name, "reference_uris": [first.reference_uris[0]]}
                         for i in range(n)], table)
    return RunConfig.model_validate({
        "concepts": table, "output": os.path.join(workdir, "out"), "model": "demo",
        "inversion": {"num_inference_steps": 2, "reconstruction": False, "batch_size": 1},
        "generation": {"num_inference_steps": 2, "batch_size": 1},
        "plan": {"methods": ["nao"], "num_images": 1},
        "evaluation": {"enabled": False},
    })


def _child(mode: str, n: int, workdir: str) -> None:
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(1)
    cfg = _config(n, workdir)
    if mode == "local":
        from normguide.pipeline import run_dataset

        t0 = time.perf_counter()
        summary = run_dataset(cfg)
        seconds, task_runs = time.perf_counter() - t0, 0
        ok = summary.finalized and not summary.failed
    else:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.testing.utilities import prefect_test_harness

        from normguide.flows.generate_dataset import generate_dataset

        with prefect_test_harness(server_startup_timeout=120):
            t0 = time.perf_counter()
            state = generate_dataset(config=cfg, return_state=True)
            seconds = time.perf_counter() - t0
            ok = state.is_completed()
            flow_run_id = state.state_details.flow_run_id
            with get_client(sync_client=True) as client:
                task_runs, offset = 0, 0
                while True:
                    page = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                                 limit=200, offset=offset)
                    task_runs += len(page)
                    offset += 200
                    if len(page) < 200:
                        break
    if not ok:
        raise SystemExit(f"{mode} run of {n} concepts did not complete")
    print(json.dumps({"seconds": seconds, "peak_rss_mib": _peak_rss_mib(), "task_runs": task_runs}), flush=True)


def _measure(mode: str, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="normguide-bench-orch-") as workdir:
        out = subprocess.run([sys.executable, __file__, "--child", mode, str(n), workdir],
                             capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if out.returncode != 0:
        raise SystemExit(f"{mode} child with {n} concepts failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    print(f"demo model, 1 reference + 1 image + 2 steps per concept, median of {args.repeats} run(s), "
          "one child process per measurement", flush=True)
    print(f"{'concepts':>8} {'local s':>8} {'flow s':>8} {'overhead s/concept':>19} {'ratio to first':>15} "
          f"{'local MiB':>10} {'flow MiB':>9} {'task runs':>10}", flush=True)
    first = None
    for n in args.concepts:
        local = [_measure("local", n) for _ in range(args.repeats)]
        flow = [_measure("flow", n) for _ in range(args.repeats)]
        ls, fs = (statistics.median(r["seconds"] for r in x) for x in (local, flow))
        per = (fs - ls) / n
        first = first or per
        print(f"{n:>8} {ls:>8.1f} {fs:>8.1f} {per:>19.3f} {per / first:>15.2f} "
              f"{statistics.median(r['peak_rss_mib'] for r in local):>10.0f} "
              f"{statistics.median(r['peak_rss_mib'] for r in flow):>9.0f} {flow[0]['task_runs']:>10}", flush=True)


if __name__ == "__main__":
    main()
