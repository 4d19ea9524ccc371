"""Benchmark: what Prefect orchestration costs per concept, as the concept table grows.

    .venv/bin/python benchmarks/orchestration.py [--concepts 10 100 1000] [--repeats 3]
        [--repeats-large 1] [--large-from 1000] [--budget-s 840] [--shard-size 250]
        [--modes local flow fanout] [--shard-arithmetic]

Every concept: 1 reference image (the shipped example's first), 1 planned image, 2 inversion and
2 generation steps, reconstruction off, demo model, local output, evaluation off. Each measurement
is a fresh child process (torch on 1 thread), against a real temporary Prefect API
(``prefect_test_harness``: a server in its own process, started before the clock starts):

- ``local``: the library loop, ``normguide.pipeline.run_dataset`` (no Prefect): the work itself;
- ``flow``: one flow run of ``flows/generate_dataset.py`` (concepts batched into tasks, default
  ``concepts_per_task = ceil(N / 64)``);
- ``fanout``: ``flows/fan_out.py`` in the child, with the generation flow served by a
  ``flow.serve`` runner in another process (limit 1: one "device"), which starts each shard's
  flow run as a subprocess, as a process worker does; ``--shard-size`` concepts per shard.

Columns: seconds (wall, from the flow call to its return, so the model load of the flow or the
shard processes counts, and the harness start does not); orchestration overhead per concept =
(driver - local) / concepts; peak RSS (VmHWM of the process that runs the flow: interpreter,
torch, the model and Prefect's client state, not the API server; for the fan-out the largest of
the parent and of the shard processes, sampled every 0.2 s); task runs created (read back from
the API), in all and in the flow run that holds the most.

After the rows, for each driver: the least-squares line of its overhead (driver - local seconds)
over the sizes, ``overhead = a + b * concepts`` (``b``: the marginal overhead per concept; ``a``:
the fixed cost), and the least-squares slope of the per-concept overhead against the size (about 0
when the overhead per concept is flat; negative when a fixed cost is being spread).

``--budget-s``: the whole benchmark's wall-clock budget. Before each size it projects that size's
time from the last one measured (linearly in concepts) and skips the sizes that would not fit,
saying so, rather than overrunning (the machine is shared).

``--shard-arithmetic`` prints, without running anything, the task runs per flow run that the
fan-out's defaults give for 10 to 100,000 concepts (``split_into_shards``, ``ceil(n / K)``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Task runs of a generation flow run besides the concept batches (prepare, load, check, start,
#: find complete, finalize, wants-evaluation, exports, report, publish report/summary, ...).
SETUP_TASK_RUNS = 12


def _peak_rss_mib(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class _TreeRss(threading.Thread):
    """Largest RSS seen among the descendants of ``root_pid`` (sampled): the shard processes."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.peak_mib, self._done = root_pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            parents = {}
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        stat = Path(f"/proc/{entry.name}/stat").read_text()
                        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                    except (OSError, ValueError, IndexError):
                        pass
            tree, grew = {self.root_pid}, True
            while grew:
                more = {p for p, pp in parents.items() if pp in tree} - tree
                tree |= more
                grew = bool(more)
            for pid in tree - {self.root_pid}:
                rss = _peak_rss_mib(pid)
                if not math.isnan(rss):
                    self.peak_mib = max(self.peak_mib, rss)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak_mib


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


def _task_runs(client, flow_run_id) -> int:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    count, offset = 0, 0
    while page := client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                        limit=200, offset=offset):
        count += len(page)
        offset += len(page)
    return count


def _child(mode: str, n: int, workdir: str, shard_size: int) -> None:
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(1)
    cfg = _config(n, workdir)
    result = {"task_runs": 0, "max_task_runs": 0, "flow_runs": 0}
    if mode == "local":
        from normguide.pipeline import run_dataset

        t0 = time.perf_counter()
        summary = run_dataset(cfg)
        seconds = time.perf_counter() - t0
        ok, peak = summary.finalized and not summary.failed, _peak_rss_mib()
    else:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            server = None
            if mode == "fanout":
                # the generation flow served from another process, as `register serve` does
                env = dict(os.environ, PYTHONPATH=str(REPO), PREFECT_API_URL=PREFECT_API_URL.value(),
                           PREFECT_RUNNER_POLL_FREQUENCY="1", OMP_NUM_THREADS="1")
                server = subprocess.Popen(
                    [sys.executable, "-c", ("from normguide.flows.generate_dataset import generate_dataset; "
                                            "generate_dataset.serve(name='bench', limit=1, print_starting_message=False)")],
                    cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                    stderr=open(os.path.join(workdir, "serve.log"), "w"))  # noqa: SIM115 - lives with the process
                with get_client(sync_client=True) as client:  # wait until the deployment exists
                    deadline = time.monotonic() + 120
                    while True:
                        try:
                            client.read_deployment_by_name("generate-dataset/bench")
                            break
                        except Exception:  # noqa: BLE001 - not registered yet
                            if time.monotonic() > deadline or server.poll() is not None:
                                raise SystemExit("the serve process did not register its deployment")
                            time.sleep(0.5)
                sampler = _TreeRss(server.pid)
                sampler.start()
            try:
                t0 = time.perf_counter()
                if mode == "flow":
                    from normguide.flows.generate_dataset import generate_dataset

                    state = generate_dataset(config=cfg, return_state=True)
                else:
                    from normguide.flows.fan_out import generate_dataset_fan_out

                    state = generate_dataset_fan_out(config=cfg, shard_size=shard_size, deployment="generate-dataset/bench",
                                                     poll_interval_s=1.0, return_state=True)
                seconds = time.perf_counter() - t0
            finally:
                if server is not None:
                    shard_peak = sampler.stop()
                    server.terminate()
                    server.wait(timeout=30)
            ok = state.is_completed()
            flow_run_id = state.state_details.flow_run_id
            with get_client(sync_client=True) as client:
                counts = [_task_runs(client, flow_run_id)]
                if mode == "fanout":
                    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
                    counts += [_task_runs(client, c.id) for c in children]
            result.update(task_runs=sum(counts), max_task_runs=max(counts), flow_runs=len(counts))
            peak = _peak_rss_mib() if mode == "flow" else max(_peak_rss_mib(), shard_peak)
    if not ok:
        raise SystemExit(f"{mode} run of {n} concepts did not complete")
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, **result}), flush=True)


def _measure(mode: str, n: int, shard_size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="normguide-bench-orch-") as workdir:
        out = subprocess.run([sys.executable, __file__, "--child", mode, str(n), workdir, str(shard_size)],
                             check=False, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if out.returncode != 0:
        raise SystemExit(f"{mode} child with {n} concepts failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def shard_arithmetic() -> None:
    """Task runs per flow run with the defaults (no run): fan-out shards of max(16, ceil(N/64)),
    each shard flow run batching its concepts ceil(n/64) per task."""
    from normguide.flows.fan_out import DEFAULT_SHARD_SIZE, MAX_SHARDS
    from normguide.flows.generate_dataset import MAX_CONCEPT_TASKS
    from normguide.sharding import split_into_shards

    print(f"fan-out defaults: shard_size = max({DEFAULT_SHARD_SIZE}, ceil(N / {MAX_SHARDS})); in each shard flow run "
          f"concepts_per_task = ceil(n / {MAX_CONCEPT_TASKS}); {SETUP_TASK_RUNS} setup task runs per flow run at most")
    print(f"{'concepts':>9} {'shard size':>10} {'shards':>7} {'K':>4} {'concept tasks/shard':>20} "
          f"{'max task runs/shard run':>24} {'parent task runs':>17} {'one flow run (no fan-out)':>26}")
    for n in (10, 100, 1_000, 10_000, 100_000):
        ids = [f"c{i:06d}" for i in range(n)]
        size = max(DEFAULT_SHARD_SIZE, math.ceil(n / MAX_SHARDS))
        shards = split_into_shards(ids, size)
        largest = max(len(s.concept_ids) for s in shards)
        k = max(1, math.ceil(largest / MAX_CONCEPT_TASKS))
        tasks = max(math.ceil(len(s.concept_ids) / max(1, math.ceil(len(s.concept_ids) / MAX_CONCEPT_TASKS)))
                    for s in shards)
        one = math.ceil(n / max(1, math.ceil(n / MAX_CONCEPT_TASKS)))
        print(f"{n:>9} {size:>10} {len(shards):>7} {k:>4} {tasks:>20} {tasks + SETUP_TASK_RUNS:>24} "
              f"{2 * len(shards) + 6:>17} {one + SETUP_TASK_RUNS:>26}")


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement below 1,000 concepts (median)")
    ap.add_argument("--repeats-large", type=int, default=1, help="runs per measurement from --large-from concepts")
    ap.add_argument("--large-from", type=int, default=1000, help="sizes from here on run --repeats-large times")
    ap.add_argument("--budget-s", type=float, default=840.0, help="skip sizes projected to overrun this wall time")
    ap.add_argument("--shard-size", type=int, default=250, help="fan-out concepts per shard")
    ap.add_argument("--modes", nargs="+", default=["local", "flow", "fanout"], choices=["local", "flow", "fanout"])
    ap.add_argument("--shard-arithmetic", action="store_true", help="only print the fan-out's task-run arithmetic")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if args.shard_arithmetic:
        shard_arithmetic()
        return
    load = os.getloadavg()
    print(f"demo model, 1 reference + 1 image + 2 steps per concept; median of {args.repeats} run(s) below "
          f"{args.large_from:,} concepts, {args.repeats_large} from there; one child process per run; fan-out: shards "
          f"of {args.shard_size}, one serving process (limit 1); torch threads 1; {os.cpu_count()} CPUs; load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the start; budget {args.budget_s:.0f} s", flush=True)
    print(f"{'concepts':>8} {'mode':>6} {'runs':>4} {'seconds':>8} {'overhead s/concept':>19} {'ratio to first':>15} "
          f"{'peak MiB':>9} {'task runs':>10} {'flow runs':>10} {'max task runs/flow run':>23}", flush=True)
    first: dict[str, float] = {}
    overheads: dict[str, list[tuple[int, float]]] = {m: [] for m in args.modes if m != "local"}
    t_start = time.perf_counter()
    last: tuple[int, list[float], float] | None = None  # (concepts, median seconds per mode, start-up per run)
    for n in args.concepts:
        repeats = args.repeats if n < args.large_from else args.repeats_large
        spent = time.perf_counter() - t_start
        if last is not None:  # each mode's timed seconds linear in concepts, plus each run's fixed start-up
            last_n, last_secs, startup = last
            projected = repeats * (sum(last_secs) * n / last_n + len(last_secs) * startup)
            if spent + projected > args.budget_s:
                print(f"{n:>8}  not run: projected {projected:.0f} s ({repeats} run(s) of every mode, timed part "
                      f"linear in concepts from {last_n:,}) > budget left {args.budget_s - spent:.0f} s", flush=True)
                continue
        t_size = time.perf_counter()
        local_s = None
        size_secs, timed = [], 0.0
        for mode in args.modes:
            runs = [_measure(mode, n, args.shard_size) for _ in range(repeats)]
            timed += sum(r["seconds"] for r in runs)
            s = statistics.median(r["seconds"] for r in runs)
            size_secs.append(s)
            if mode == "local":
                local_s = s
            per = (s - local_s) / n if local_s is not None and mode != "local" else float("nan")
            if mode != "local" and local_s is not None:
                overheads[mode].append((n, s - local_s))
            first.setdefault(mode, per)
            ratio = per / first[mode] if mode != "local" else float("nan")
            print(f"{n:>8} {mode:>6} {repeats:>4} {s:>8.1f} {per:>19.3f} {ratio:>15.2f} "
                  f"{statistics.median(r['peak_rss_mib'] for r in runs):>9.0f} {runs[0]['task_runs']:>10} "
                  f"{runs[0]['flow_runs']:>10} {runs[0]['max_task_runs']:>23}", flush=True)
        last = (n, size_secs, (time.perf_counter() - t_size - timed) / (repeats * len(args.modes)))
    for mode, points in overheads.items():
        if len(points) < 2:
            print(f"{mode}: fewer than two sizes measured, no slope", flush=True)
            continue
        a, b = _least_squares([p[0] for p in points], [p[1] for p in points])
        _, slope = _least_squares([p[0] for p in points], [p[1] / p[0] for p in points])
        print(f"{mode}: overhead = {a:.1f} s + {b:.4f} s x concepts (least squares over {[p[0] for p in points]}); "
              f"per-concept overhead slope {slope * 1000:+.3f} ms per concept per extra concept", flush=True)
    load = os.getloadavg()
    print(f"benchmark wall time: {time.perf_counter() - t_start:.0f} s; load average {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f} at the end", flush=True)


def _least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Intercept and slope of the least-squares line through (xs, ys)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


if __name__ == "__main__":
    main()
