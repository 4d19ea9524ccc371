"""What `normguide run` costs beyond the work itself (issue 11: overhead <= 10 s on 2 cores).

Side by side, in one session, each the median of N runs (a new output folder each time):

- library: `run_dataset` of a tiny run (1 concept, 1 reference, 1 image, 2 steps) in a warm
  process (imports and the model already loaded): the work itself;
- CLI, local driver: `normguide run` of the same tiny run, as a new process (what a user types);
- CLI, no-op: `normguide run` again on the complete run (answers without loading the model);
- CLI, --prefect: the same tiny run as a Prefect flow on Prefect's ephemeral API (a fresh
  PREFECT_HOME each time, so the database is created, as on a first run).

overhead = CLI seconds - library seconds.

    .venv/bin/python benchmarks/cli_overhead.py [--runs 5] [--prefect-runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normguide.config import RunConfig  # noqa: E402
from normguide.data.schema import write_concept_table  # noqa: E402
from tests.helpers import make_reference  # noqa: E402

SETTINGS = ["--model", "demo", "--methods", "nao", "--num-images", "1", "--steps", "2", "--inversion-steps", "2",
            "--no-reconstruction"]


def _table(folder: Path) -> Path:
    make_reference(folder / "refs" / "0.png", seed=1)
    write_concept_table([{"concept_id": "c", "name": "two", "reference_uris": ["refs/0.png"]}], folder / "c.parquet")
    return folder / "c.parquet"


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", "from normguide.cli import main; main()", *args], cwd=cwd, env=env,
                         capture_output=True, text=True)
    took = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"normguide {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prefect-runs", type=int, default=3)
    args = ap.parse_args()

    from normguide.pipeline import run_dataset

    work = Path(tempfile.mkdtemp(prefix="normguide-overhead-"))
    table = _table(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(work / "prefect-home")

    def cfg(out: Path) -> RunConfig:
        return RunConfig(concepts=str(table), output=str(out)).with_overrides(**{
            "model": "demo", "plan.methods": ("nao",), "plan.num_images": 1, "generation.num_inference_steps": 2,
            "inversion.num_inference_steps": 2, "inversion.reconstruction": False, "evaluation.enabled": False})

    run_dataset(cfg(work / "warm"))  # imports and the model, once
    rows: dict[str, list[float]] = {"library": [], "cli": [], "noop": [], "prefect": []}
    for i in range(args.runs):
        start = time.perf_counter()
        run_dataset(cfg(work / f"lib{i}"))
        rows["library"].append(time.perf_counter() - start)
        out = work / f"cli{i}"
        rows["cli"].append(_cli(["run", "--no-prefect", "--concepts", str(table), "--output", str(out), *SETTINGS], env, work))
        rows["noop"].append(_cli(["run", "--no-prefect", "--concepts", str(table), "--output", str(out), *SETTINGS], env, work))
    for i in range(args.prefect_runs):
        penv = dict(env, PREFECT_HOME=str(work / f"prefect-home-{i}"))
        rows["prefect"].append(_cli(["run", "--prefect", "--concepts", str(table), "--output", str(work / f"pf{i}"),
                                     *SETTINGS], penv, work))

    lib = statistics.median(rows["library"])
    print(f"normguide run overhead (median of {args.runs}; --prefect: {args.prefect_runs}; {os.cpu_count()} cores)")
    print(f"{'what':<44}{'median s':>10}{'min s':>8}{'max s':>8}{'overhead s':>12}")
    labels = {"library": "library run_dataset (warm process): the work", "cli": "normguide run (local driver, new process)",
              "noop": "normguide run on a complete run (no-op)", "prefect": "normguide run --prefect (fresh PREFECT_HOME)"}
    for key, label in labels.items():
        xs = rows[key]
        if not xs:
            continue
        med = statistics.median(xs)
        over = "" if key == "library" else f"{med - lib:.1f}"
        print(f"{label:<44}{med:>10.1f}{min(xs):>8.1f}{max(xs):>8.1f}{over:>12}")


if __name__ == "__main__":
    main()
